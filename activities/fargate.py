"""The CPU/memory pairs Fargate accepts (pure: used by workflows and activities alike).

https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html
"""

# cpu units -> (min memory MiB, max memory MiB, step MiB); 256 has its own short list.
_RANGES: dict[int, tuple[int, int, int]] = {
    512: (1024, 4096, 1024),
    1024: (2048, 8192, 1024),
    2048: (4096, 16384, 1024),
    4096: (8192, 30720, 1024),
    8192: (16384, 61440, 4096),
    16384: (32768, 122880, 8192),
}


def valid_memory(cpu: int) -> list[int]:
    """Every memory size (MiB) Fargate accepts with this many CPU units; [] for an invalid cpu."""
    if cpu == 256:
        return [512, 1024, 2048]
    if cpu not in _RANGES:
        return []
    low, high, step = _RANGES[cpu]
    return list(range(low, high + 1, step))


def valid_cpu() -> list[int]:
    return [256, *_RANGES]


def describe_valid(cpu: int) -> str:
    sizes = valid_memory(cpu)
    if not sizes:
        return f"cpu {cpu} is not a Fargate size; valid cpu: {', '.join(map(str, valid_cpu()))}"
    if len(sizes) <= 4:
        return f"valid memory with cpu {cpu}: {', '.join(map(str, sizes))} MiB"
    step = sizes[1] - sizes[0]
    return f"valid memory with cpu {cpu}: {sizes[0]} to {sizes[-1]} MiB in steps of {step}"


def memory_refusal(cpu: int, memory: int) -> str | None:
    """Why Fargate would refuse this pair (naming the valid sizes), or None."""
    if memory in valid_memory(cpu):
        return None
    return f"memory: {memory} MiB is not valid on Fargate with cpu {cpu}; {describe_valid(cpu)}"
