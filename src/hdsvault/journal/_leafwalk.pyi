from collections.abc import Sequence

def walk(
    path: str, log_id: str, start: int, end: int, sizes: Sequence[int], /
) -> tuple[bool, int, int, int, bytes, bytes]: ...
def walk_copy(
    data: bytes, start: int, end: int, sizes: Sequence[int], /
) -> tuple[bool, int, int, int, bytes, bytes]: ...
