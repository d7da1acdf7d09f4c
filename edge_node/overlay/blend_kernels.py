"""The compiled loops behind ``blend.py``: one call blends all three planes of a sprite
(or of a solid rectangle) into a frame, in one pass per plane.

Why compiled: a text sprite is ~10,000 luma pixels, and blending it with numpy took a
dozen ufunc calls (copy to a uint16 scratch, multiply, add, shift, copy back, per
plane) whose fixed cost was most of the ~11 us per sprite. Here each plane is one loop
over its rows that LLVM vectorizes (16-bit lanes at full opacity), with the clipping
done inside, so the Python side makes one call per sprite and allocates nothing.

The arithmetic is exactly ``blend.py``'s fixed point (see its docstring); this module
only runs it. Each kernel has one explicit signature, compiled when the module is
imported (at the media worker's start-up: about 2 s the first time, then loaded from
numba's on-disk cache in well under a second): the frame's planes as writable uint8
arrays of any layout (a decoded frame's rows are padded), the sprite's planes as
C-contiguous uint16 arrays, read-only or not (``Sprite`` guarantees both). So there is
exactly one machine-code version of each kernel, the one the tests check; other
argument types are refused (TypeError), never compiled on a frame. Nothing here
allocates, touches anything outside the rectangle drawn, or holds the GIL while it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
from numba import types
from numpy.typing import NDArray

from edge_node.overlay.sprite import ALPHA_ONE, ROUNDING

log = logging.getLogger(__name__)

U8 = NDArray[np.uint8]
U16 = NDArray[np.uint16]
U32 = NDArray[np.uint32]

OPACITY_ONE = 1 << 14
"""Fixed-point opacity of 1.0 (14 bits)."""
OPACITY_SHIFT = 22
"""8 bits of alpha + 14 bits of opacity."""

_F = TypeVar("_F", bound=Callable[..., Any])

_FRAME = types.Array(types.uint8, 2, "A")
_PLANE = types.Array(types.uint16, 2, "C", readonly=True)
_OPACITY = types.Array(types.uint32, 1, "C", readonly=True)
_LUMA_FILL = types.Array(types.uint16, 1, "C", readonly=True)
_CHROMA_FILL = types.Array(types.uint16, 2, "C", readonly=True)
_INT = types.int64

BLEND_SIGNATURE = types.void(
    _FRAME, _FRAME, _FRAME, _PLANE, _PLANE, _PLANE, _PLANE, _PLANE, _INT, _INT, _INT, _INT, _OPACITY
)
FILL_SIGNATURE = types.void(
    _FRAME, _FRAME, _FRAME, _INT, _INT, _INT, _INT, _LUMA_FILL, _CHROMA_FILL
)

# Numba does integer arithmetic in 64 bits. LLVM narrows it back to the 16 or 32 bits
# the result needs (two or four times the pixels per vector register) when it can see
# the operands' widths: values loaded in the loop, or explicit casts (``_translucent``).
# So a blend's constants (opacity terms, a fill's colour) come as small arrays read in
# the loop rather than as scalar arguments.


def opacity_terms(op: int) -> NDArray[np.uint32]:
    """The kernels' opacity argument for fixed-point opacity ``op`` (1..OPACITY_ONE):
    ``[op, 256 * (OPACITY_ONE - op), 2**21 - 128 * op]`` (multiplier of the premultiplied
    value, the part of the alpha multiplier that does not depend on the sprite, and the
    rounding bias minus the sprite's folded-in rounding term), read-only."""
    if not 0 < op <= OPACITY_ONE:
        raise ValueError(f"op: fixed-point opacity must be in 1..{OPACITY_ONE}, got {op}")
    terms = np.array(
        [op, ALPHA_ONE * (OPACITY_ONE - op), (1 << (OPACITY_SHIFT - 1)) - ROUNDING * op],
        dtype=np.uint32,
    )
    terms.flags.writeable = False
    return terms


def _compile(signature: Any | None = None) -> Callable[[_F], _F]:
    """``numba.njit`` with our options; cached on disk when numba finds a writable
    place for it (next to this file or in the user's cache directory), else compiled
    at every start (a read-only install with no home directory), with a warning."""

    def wrap(func: _F) -> _F:
        try:
            compiled = numba.njit(
                signature, cache=True, nogil=True, boundscheck=False, error_model="numpy"
            )(func)
        except RuntimeError as exc:  # "cannot cache function ...: no locator available"
            log.warning("numba cannot cache %s (%s): compiling it at every start", func, exc)
            compiled = numba.njit(signature, nogil=True, boundscheck=False, error_model="numpy")(
                func
            )
        return cast(_F, compiled)

    return wrap


@_compile()
def _clip(start: int, length: int, limit: int) -> tuple[int, int]:
    """``[start, start + length)`` clipped to ``[0, limit)`` (empty: lo >= hi)."""
    return max(start, 0), min(start + length, limit)


@_compile()
def _translucent(d: np.uint8, inv: np.uint16, pre: np.uint16, terms: U32) -> np.uint32:
    """One sample blended at an opacity below one (``blend.py``'s uint32 formula).

    Every intermediate fits 32 bits (at most about 2**31); the explicit uint32 casts
    say so to LLVM, which then uses 32-bit lanes instead of numba's 64-bit ones.
    """
    k = np.uint32(np.uint32(inv) * terms[0] + terms[1])
    s = np.uint32(np.uint32(d) * k)
    s = np.uint32(s + np.uint32(np.uint32(pre) * terms[0]))
    return np.uint32(s + terms[2]) >> np.uint32(OPACITY_SHIFT)


@_compile()
def _luma(dst: U8, inv: U16, pre: U16, x: int, y: int, terms: U32) -> None:
    h, w = inv.shape
    top, bottom = _clip(y, h, dst.shape[0])
    left, right = _clip(x, w, dst.shape[1])
    n = right - left
    if n <= 0:
        return
    if terms[0] == OPACITY_ONE:
        for r in range(top, bottom):
            d = dst[r, left:right]
            i = inv[r - y, left - x : right - x]
            p = pre[r - y, left - x : right - x]
            for c in range(n):
                # <= 255 * 256 + 128: fits 16 bits, so LLVM uses 16-bit lanes.
                d[c] = (np.uint16(d[c]) * i[c] + p[c]) >> 8
        return
    for r in range(top, bottom):
        d = dst[r, left:right]
        i = inv[r - y, left - x : right - x]
        p = pre[r - y, left - x : right - x]
        for c in range(n):
            d[c] = _translucent(d[c], i[c], p[c], terms)


@_compile()
def _chroma(
    dst_u: U8, dst_v: U8, inv: U16, u_pre: U16, v_pre: U16, x: int, y: int, terms: U32
) -> None:
    # U and V share the sprite's chroma alpha: one pass over both.
    h, w = inv.shape
    top, bottom = _clip(y, h, dst_u.shape[0])
    left, right = _clip(x, w, dst_u.shape[1])
    n = right - left
    if n <= 0:
        return
    if terms[0] == OPACITY_ONE:
        for r in range(top, bottom):
            du = dst_u[r, left:right]
            dv = dst_v[r, left:right]
            i = inv[r - y, left - x : right - x]
            pu = u_pre[r - y, left - x : right - x]
            pv = v_pre[r - y, left - x : right - x]
            for c in range(n):
                du[c] = (np.uint16(du[c]) * i[c] + pu[c]) >> 8
                dv[c] = (np.uint16(dv[c]) * i[c] + pv[c]) >> 8
        return
    for r in range(top, bottom):
        du = dst_u[r, left:right]
        dv = dst_v[r, left:right]
        i = inv[r - y, left - x : right - x]
        pu = u_pre[r - y, left - x : right - x]
        pv = v_pre[r - y, left - x : right - x]
        for c in range(n):
            du[c] = _translucent(du[c], i[c], pu[c], terms)
            dv[c] = _translucent(dv[c], i[c], pv[c], terms)


@_compile(BLEND_SIGNATURE)
def blend_sprite(
    y: U8,
    u: U8,
    v: U8,
    y_inv: U16,
    y_pre: U16,
    c_inv: U16,
    u_pre: U16,
    v_pre: U16,
    x: int,
    y0: int,
    cx: int,
    cy: int,
    terms: U32,
) -> None:
    """Blend a sprite's luma planes at ``(x, y0)`` of ``y`` and its chroma planes (of
    the placement's parity) at ``(cx, cy)`` of ``u`` and ``v``, each clipped to its
    plane, at the opacity ``terms`` (``opacity_terms``)."""
    _luma(y, y_inv, y_pre, x, y0, terms)
    _chroma(u, v, c_inv, u_pre, v_pre, cx, cy, terms)


@_compile()
def _fill_span(u_row: U8, v_row: U8, start: int, stop: int, chroma: U16, covered: int) -> None:
    # Indices from 0 (a slice, not range(start, stop)): numba wraps negative indices
    # around, and only a loop it can prove non-negative vectorizes (8x faster here).
    du = u_row[start:stop]
    dv = v_row[start:stop]
    for c in range(stop - start):
        du[c] = (np.uint16(du[c]) * chroma[0, covered] + chroma[1, covered]) >> 8
    for c in range(stop - start):
        dv[c] = (np.uint16(dv[c]) * chroma[0, covered] + chroma[2, covered]) >> 8


@_compile(FILL_SIGNATURE)
def fill_rect(
    y: U8,
    u: U8,
    v: U8,
    left: int,
    top: int,
    right: int,
    bottom: int,
    luma: U16,
    chroma: U16,
) -> None:
    """Blend a solid colour over luma ``[left, right) x [top, bottom)`` (inside the
    frame, not empty) and over the chroma samples of every 2x2 block it touches.

    ``luma`` is the colour's ``[inv, pre]``; ``chroma[k, n]`` (k: 0 inv, 1 U pre,
    2 V pre) its chroma fixed point for a sample whose 2x2 block the rectangle covers
    ``n`` (1, 2 or 4) luma pixels of.
    """
    n = right - left
    for r in range(top, bottom):
        d = y[r, left:right]
        for c in range(n):
            d[c] = (np.uint16(d[c]) * luma[0] + luma[1]) >> 8
    first, last = left >> 1, (right - 1) >> 1
    # Columns covered on one side only (an odd left or right edge, or a single
    # column) are done apart from the fully covered run between them.
    n_first = min(2 * first + 2, right) - left
    n_last = right - max(2 * last, left)
    for j in range(top >> 1, ((bottom - 1) >> 1) + 1):
        n_rows = min(2 * j + 2, bottom) - max(2 * j, top)
        du = u[j]
        dv = v[j]
        _fill_span(du, dv, first, first + 1, chroma, n_rows * n_first)
        if last > first:
            _fill_span(du, dv, first + 1, last, chroma, 2 * n_rows)
            _fill_span(du, dv, last, last + 1, chroma, n_rows * n_last)
