"""The alarm webhook: CloudWatch alarms via SNS and Alertmanager start runbooks, once."""
