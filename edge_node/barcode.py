"""The contract's 16-bit barcode strip: 16 cells of 16x16 px, white = 1, MSB first.

The test pattern stamps its frame counter at the bottom-left; the probe widget stamps
a probe's ``seq`` at the top-left. Receivers (tests, bench) read it back from the
decoded Y plane. Works on the luma plane only, so it costs one small slice per frame.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

CELL_PX = 16
BITS = 16
STRIP_WIDTH_PX = CELL_PX * BITS
Y_WHITE = 235  # limited-range video white / black, what encoders expect
Y_BLACK = 16

YPlane = npt.NDArray[np.uint8]


def draw(y_plane: YPlane, value: int, x: int, y: int) -> None:
    """Draw ``value`` (taken modulo 2**16) into the luma plane at (x, y)."""
    value &= 0xFFFF
    strip = y_plane[y : y + CELL_PX, x : x + STRIP_WIDTH_PX]
    bits = (value >> np.arange(BITS - 1, -1, -1)) & 1
    row = np.repeat(np.where(bits == 1, Y_WHITE, Y_BLACK).astype(np.uint8), CELL_PX)
    strip[:] = row


def read(y_plane: YPlane, x: int, y: int) -> int:
    """Read the value back, sampling the middle 8x8 of each cell (robust to coding)."""
    q = CELL_PX // 4
    cells = y_plane[y + q : y + CELL_PX - q, x : x + STRIP_WIDTH_PX].astype(np.uint16)
    cells = cells.reshape(CELL_PX - 2 * q, BITS, CELL_PX)[:, :, q : CELL_PX - q]
    means = cells.mean(axis=(0, 2))
    value = 0
    for bit in means > (Y_WHITE + Y_BLACK) / 2:
        value = (value << 1) | int(bit)
    return value


def bottom_left(height: int) -> tuple[int, int]:
    """Position of the frame-counter strip for a frame of ``height`` rows."""
    return 0, height - CELL_PX


TOP_LEFT = (0, 0)
