"""One module an incident the runbooks handle: what injecting it does to the simulated
systems, what heals it, and what the service reports meanwhile. The control API that drives
them is sandbox/service.py."""
