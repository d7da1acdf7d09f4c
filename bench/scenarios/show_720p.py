"""``show-720p``: the whole show at 1280x720, 30 fps (see ``bench.scenarios._show``)."""

from __future__ import annotations

from typing import ClassVar

from bench import show
from bench.scenarios import Peer
from bench.scenarios._show import Show, describe, show_peer

SIZE = show.SIZES["720p"]


class Show720p(Show):
    name = "show-720p"
    description = describe(SIZE)
    size = SIZE
    peer: ClassVar[Peer | None] = show_peer(SIZE)


SCENARIO = Show720p()
