"""Pre-rendered overlay images, ready to be blended into yuv420p frames.

A ``Sprite`` is built once (from straight RGBA, e.g. rendered text) and then blended
into many frames at many positions, so everything that can be worked out ahead of
time is: the BT.601 conversion, premultiplication, fixed-point alpha and the 2x2
chroma averages. Nothing here runs per frame except ``Sprite.chroma`` the first time
a parity is used (then it is cached).

Fixed point (see ``blend.py`` for the arithmetic that consumes it):

- alpha ``A`` is an integer in 0..256 (256 = opaque), stored as ``inv = 256 - A``;
- a premultiplied value is ``pre = round(value * A) + 128`` (the ``+ 128`` is the
  rounding term of the final ``>> 8``, folded in so the blend needs no extra pass);
- both are uint16: ``dst * inv + pre <= 255 * 256 + 128`` never overflows, so the
  blend runs entirely on uint16, ``dst = (dst * inv + pre) >> 8``.

Chroma: yuv420p holds one U and V sample per 2x2 luma block. A sprite placed at an
odd x or y covers those blocks differently, so a chroma plane set exists for each of
the four parities (x % 2, y % 2). Each chroma sample's alpha is the mean of the alpha
of the four luma pixels of its block (pixels the sprite does not cover count as
transparent, so a half-covered block is blended at half strength), and its colour is
the alpha-weighted mean of the sprite's colours there.

Only the sprite's ink box is kept: rows and columns that are fully transparent all
round are dropped (the box's top-left rounded down to even coordinates, so chroma
parities are unchanged), since blending them would change nothing. Text sprites
carry a line box and an outline margin, so this saves a fifth of the work or more;
a fully transparent sprite costs nothing to blend.

It never holds or touches a frame, and never changes after construction (the lazily
computed chroma planes are a cache of a pure function of the sprite).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

U8 = NDArray[np.uint8]
U16 = NDArray[np.uint16]

# BT.601, limited ("TV") range: what FFmpeg's swscale uses by default for
# RGB -> yuv420p, so a sprite's colours are what the encoder would produce from
# the same RGB. Rows: Y, U, V; columns: R, G, B (for 0..255 input).
_BT601 = (
    np.array(
        [
            [65.481, 128.553, 24.966],
            [-37.797, -74.203, 112.0],
            [112.0, -93.786, -18.214],
        ],
        dtype=np.float64,
    )
    / 255.0
)
_BT601_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float64)
_BT601_ROWS: tuple[tuple[float, ...], ...] = tuple(tuple(float(k) for k in row) for row in _BT601)
_BT601_OFFSET_TUPLE: tuple[float, ...] = tuple(float(k) for k in _BT601_OFFSET)

ALPHA_ONE = 256
"""Fixed-point alpha of an opaque pixel."""
ROUNDING = 128
"""Folded into every premultiplied value: the rounding term of the final ``>> 8``."""


def rgb_to_yuv(rgb: NDArray[np.floating] | NDArray[np.uint8]) -> NDArray[np.float64]:
    """BT.601 limited-range Y, U, V (float, last axis) of 0..255 R, G, B (last axis)."""
    rgb64 = np.asarray(rgb, dtype=np.float64)
    out = np.empty(rgb64.shape, dtype=np.float64)
    r, g, b = rgb64[..., 0], rgb64[..., 1], rgb64[..., 2]
    for i in range(3):
        kr, kg, kb = _BT601[i]
        out[..., i] = kr * r + kg * g + kb * b + _BT601_OFFSET[i]
    return out


def yuv_of_rgb(r: int, g: int, b: int) -> tuple[float, float, float]:
    """``rgb_to_yuv`` of one colour, in plain Python (no array overhead)."""
    m, o = _BT601_ROWS, _BT601_OFFSET_TUPLE
    return (
        o[0] + m[0][0] * r + m[0][1] * g + m[0][2] * b,
        o[1] + m[1][0] * r + m[1][1] * g + m[1][2] * b,
        o[2] + m[2][0] * r + m[2][1] * g + m[2][2] * b,
    )


def alpha_fixed(alpha8_sum: NDArray[np.integer] | int, samples: int) -> NDArray[np.int64]:
    """Fixed-point alpha (0..256) of the mean of ``samples`` 8-bit alphas summing to
    ``alpha8_sum``: ``round(sum * 256 / (255 * samples))`` in integer arithmetic."""
    s = np.asarray(alpha8_sum, dtype=np.int64)
    out: NDArray[np.int64] = (s * 512 + 255 * samples) // (510 * samples)
    return out


def alpha_fixed_int(alpha8_sum: int, samples: int) -> int:
    """``alpha_fixed`` of one value, in plain Python."""
    return (alpha8_sum * 512 + 255 * samples) // (510 * samples)


def premultiplied(value: NDArray[np.float64], alpha: NDArray[np.int64]) -> U16:
    """``round(value * alpha) + ROUNDING`` as uint16, never above ``255 * alpha + 128``
    (the bound that keeps the uint16 blend from overflowing)."""
    pre = np.rint(value * alpha)
    np.clip(pre, 0, 255 * alpha, out=pre)
    pre += ROUNDING
    return pre.astype(np.uint16)


def _readonly(a: NDArray[np.generic]) -> None:
    a.flags.writeable = False


@dataclass(frozen=True, slots=True)
class ChromaPlanes:
    """The U/V planes of a sprite for one placement parity, at chroma resolution.

    Sample ``[j, i]`` lands on the frame's chroma sample ``(y // 2 + j, x // 2 + i)``
    for a sprite placed at luma ``(x, y)`` with the parity these planes were made for.
    """

    inv: U16
    u_pre: U16
    v_pre: U16

    @property
    def nbytes(self) -> int:
        return int(self.inv.nbytes + self.u_pre.nbytes + self.v_pre.nbytes)


class Sprite:
    """An immutable overlay image in premultiplied fixed-point YUV (see module doc).

    ``width`` x ``height`` is the image's size, for layout. ``y_inv`` and ``y_pre``
    (uint16, read-only) are the luma planes of its ink box, whose top-left corner is
    at ``(ink_x, ink_y)`` in the image (both even); ``chroma(x % 2, y % 2)`` gives the
    ink box's chroma planes for a placement parity.
    """

    __slots__ = (
        "_alpha8",
        "_chroma",
        "_lock",
        "_u_fix",
        "_v_fix",
        "height",
        "ink_x",
        "ink_y",
        "width",
        "y_inv",
        "y_pre",
    )

    width: int
    height: int
    ink_x: int
    ink_y: int
    y_inv: U16
    y_pre: U16

    def __init__(
        self,
        size: tuple[int, int],
        ink_origin: tuple[int, int],
        y_inv: U16,
        y_pre: U16,
        alpha8: U8,
        u_fix: U16,
        v_fix: U16,
    ) -> None:
        """Use ``Sprite.from_rgba``; this takes already converted planes of the ink
        box: ``size`` is (width, height), ``ink_origin`` (x, y), both even."""
        self.width, self.height = size
        self.ink_x, self.ink_y = ink_origin
        if self.ink_x % 2 or self.ink_y % 2:
            raise ValueError("the ink box must start at even coordinates")
        for a in (y_inv, y_pre, alpha8, u_fix, v_fix):
            if a.shape != y_inv.shape:
                raise ValueError("sprite planes must all have the same shape")
            if not a.flags.c_contiguous:
                # The compiled blend takes C-contiguous planes only (so it can vectorize).
                raise ValueError("sprite planes must be C-contiguous")
            _readonly(a)
        self.y_inv = y_inv
        self.y_pre = y_pre
        # Kept at luma resolution to build the chroma planes of a parity on first use:
        # 8-bit alpha, and U, V in 8.8 fixed point (rounding them to 8 bits would cost
        # up to half a code value on top of the blend's own rounding).
        self._alpha8 = alpha8
        self._u_fix = u_fix
        self._v_fix = v_fix
        self._chroma: list[ChromaPlanes | None] = [None, None, None, None]
        self._lock = threading.Lock()

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, "_lock"):
            raise AttributeError("Sprite is immutable")
        object.__setattr__(self, name, value)

    @classmethod
    def from_rgba(cls, rgba: NDArray[np.uint8]) -> Sprite:
        """A sprite from straight (not premultiplied) RGBA, shape (height, width, 4).

        Any size, including odd and empty ones.
        """
        arr = np.asarray(rgba)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 4:
            raise ValueError(f"expected uint8 RGBA of shape (h, w, 4), got {arr.dtype} {arr.shape}")
        height, width = arr.shape[:2]
        rows = np.flatnonzero(arr[..., 3].any(axis=1))
        cols = np.flatnonzero(arr[..., 3].any(axis=0))
        if rows.size:
            ink_y, ink_x = int(rows[0]) & ~1, int(cols[0]) & ~1
            arr = arr[ink_y : int(rows[-1]) + 1, ink_x : int(cols[-1]) + 1]
        else:
            ink_y, ink_x = 0, 0
            arr = arr[:0, :0]
        yuv = rgb_to_yuv(arr[..., :3])
        alpha8 = arr[..., 3].copy()
        a = alpha_fixed(alpha8, 1)
        y_inv = (ALPHA_ONE - a).astype(np.uint16)
        y_pre = premultiplied(yuv[..., 0], a)
        u_fix = np.rint(yuv[..., 1] * 256.0).astype(np.uint16)
        v_fix = np.rint(yuv[..., 2] * 256.0).astype(np.uint16)
        return cls((width, height), (ink_x, ink_y), y_inv, y_pre, alpha8, u_fix, v_fix)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in luma pixels."""
        return self.height, self.width

    def chroma(self, x_parity: int, y_parity: int) -> ChromaPlanes:
        """Chroma planes of the ink box for a placement at an ``x`` with
        ``x % 2 == x_parity`` and a ``y`` with ``y % 2 == y_parity``; built on first
        use, then cached."""
        index = (y_parity & 1) * 2 + (x_parity & 1)
        planes = self._chroma[index]
        if planes is None:
            # The lock only stops two threads from doing the same work twice; a
            # reader never waits for it once the planes exist.
            with self._lock:
                planes = self._chroma[index]
                if planes is None:
                    planes = self._build_chroma(x_parity & 1, y_parity & 1)
                    self._chroma[index] = planes
        return planes

    def prepare(self) -> None:
        """Build the chroma planes of all four parities now (off the frame path)."""
        for index in range(4):
            self.chroma(index & 1, index >> 1)

    @property
    def nbytes(self) -> int:
        """Bytes this sprite may hold, counting the chroma planes of all four parities
        whether built yet or not: constant over the sprite's life, for cache budgets."""
        h, w = self.y_inv.shape
        luma = self.y_inv.nbytes + self.y_pre.nbytes
        source = self._alpha8.nbytes + self._u_fix.nbytes + self._v_fix.nbytes
        chroma = 0
        for py in (0, 1):
            for px in (0, 1):
                chroma += 3 * 2 * ((h + py + 1) // 2) * ((w + px + 1) // 2)
        return int(luma + source + chroma)

    def _build_chroma(self, px: int, py: int) -> ChromaPlanes:
        h, w = self.y_inv.shape
        ch, cw = (h + py + 1) // 2, (w + px + 1) // 2

        def block_sums(plane: NDArray[np.int32]) -> NDArray[np.int32]:
            # Lay the sprite onto the 2x2 grid it meets at this parity (uncovered
            # positions are zero: transparent), then sum each block. int32 holds the
            # largest sum: 4 * 255 * 240 * 256.
            grid = np.zeros((2 * ch, 2 * cw), dtype=np.int32)
            grid[py : py + h, px : px + w] = plane
            out: NDArray[np.int32] = grid[0::2, 0::2] + grid[1::2, 0::2]
            out += grid[0::2, 1::2]
            out += grid[1::2, 1::2]
            return out

        alpha8 = self._alpha8.astype(np.int32)
        alpha_sum = block_sums(alpha8)
        a = alpha_fixed(alpha_sum, 4)
        # Colour of a chroma sample: the alpha-weighted mean over its block (u_fix is
        # 8.8 fixed point); premultiplied by the block's fixed-point alpha.
        weight = np.maximum(alpha_sum, 1).astype(np.float64) * 256.0
        planes = []
        for fix in (self._u_fix, self._v_fix):
            mean = block_sums(fix * alpha8) / weight
            planes.append(premultiplied(mean, a))
        inv = (ALPHA_ONE - a).astype(np.uint16)
        for p in (inv, *planes):
            _readonly(p)
        return ChromaPlanes(inv=inv, u_pre=planes[0], v_pre=planes[1])
