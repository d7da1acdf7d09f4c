"""``show-1080p``: the whole show at 1920x1080, 30 fps (see ``bench.scenarios._show``)."""

from __future__ import annotations

from typing import ClassVar

from bench import show
from bench.scenarios import Peer
from bench.scenarios._show import Show, describe, show_peer

SIZE = show.SIZES["1080p"]


class Show1080p(Show):
    name = "show-1080p"
    description = describe(SIZE)
    size = SIZE
    peer: ClassVar[Peer | None] = show_peer(SIZE)


SCENARIO = Show1080p()
