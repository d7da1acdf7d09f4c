"""Fixed-point alpha blending of sprites and solid rectangles into yuv420p planes.

This is the per-frame hot path of the compositor. It works in place on the frame's
own planes (``frame_planes``), touches only the rectangle being drawn (clipped to the
frame), and does integer arithmetic only, so its cost grows with the overlay's area
and never with the frame's size. It must never copy a frame, allocate a frame-sized
temporary, or loop over pixels in Python: the loops are compiled
(``blend_kernels.py``), one call per sprite or rectangle, allocating nothing.

Per plane, with the sprite's fixed-point planes (see ``sprite.py``)::

    dst = (dst * inv + pre) >> 8        # inv = 256 - alpha, pre = value * alpha + 128

and with an opacity ``o`` (``op = round(o * 2**14)``), in uint32 (the largest
intermediate, ``255 * 2**22 + 65408 * 2**14``, is about half of 2**32)::

    dst = (dst * (inv * op + 256 * (2**14 - op)) + pre * op + 2**21 - 128 * op) >> 22
"""

from __future__ import annotations

from functools import lru_cache

import av
import numpy as np
from numpy.typing import NDArray

from edge_node.overlay import blend_kernels
from edge_node.overlay.blend_kernels import OPACITY_ONE, opacity_terms
from edge_node.overlay.sprite import ALPHA_ONE, ROUNDING, Sprite, alpha_fixed_int, yuv_of_rgb

U8 = NDArray[np.uint8]
U16 = NDArray[np.uint16]

_FILL_COLOURS = 256  # distinct fill colours remembered (a style has a handful)
_OPACITIES = 64  # distinct opacities remembered


def _opacity_fixed(opacity: float) -> int:
    if not opacity > 0.0:  # also catches NaN
        return 0
    if opacity >= 1.0:
        return OPACITY_ONE
    return int(opacity * OPACITY_ONE + 0.5)


_OPAQUE = opacity_terms(OPACITY_ONE)
# A style has one opacity and a logo another: a few distinct values in a run.
_translucent = lru_cache(maxsize=_OPACITIES)(opacity_terms)


def blend(y: U8, u: U8, v: U8, sprite: Sprite, x: int, y0: int, opacity: float = 1.0) -> None:
    """Blend ``sprite`` with its top-left corner at luma ``(x, y0)`` into the yuv420p
    planes ``y`` (H x W), ``u`` and ``v`` (ceil(H/2) x ceil(W/2)), in place.

    Any position is allowed: the sprite is clipped at every edge, and one entirely
    outside the frame is a no-op. ``opacity`` (0..1) scales the sprite's alpha.
    """
    if opacity >= 1.0:
        terms = _OPAQUE
    else:
        op = _opacity_fixed(opacity)
        if op == 0:
            return
        terms = _OPAQUE if op == OPACITY_ONE else _translucent(op)
    if sprite.y_inv.size == 0:
        return
    # The planes cover the sprite's ink box; its offset is even: same parities.
    x += sprite.ink_x
    y0 += sprite.ink_y
    planes = sprite.chroma(x & 1, y0 & 1)
    # Floor division puts a sprite at x = -1 on chroma column -1: right for negatives.
    blend_kernels.blend_sprite(
        y,
        u,
        v,
        sprite.y_inv,
        sprite.y_pre,
        planes.inv,
        planes.u_pre,
        planes.v_pre,
        x,
        y0,
        x >> 1,
        y0 >> 1,
        terms,
    )


@lru_cache(maxsize=_FILL_COLOURS)
def _fill_fixed(rgba: tuple[int, int, int, int]) -> tuple[U16, U16]:
    """A solid colour's fixed point, as ``blend_kernels.fill_rect`` takes it: luma
    ``[inv, pre]``, and chroma ``[inv, u_pre, v_pre][:, n]`` for a sample whose 2x2
    block is ``n``/4 covered (read-only)."""
    alpha8 = max(0, min(255, int(rgba[3])))
    luma, cb, cr = yuv_of_rgb(int(rgba[0]), int(rgba[1]), int(rgba[2]))
    a = alpha_fixed_int(alpha8, 1)
    luma_fixed = np.array([ALPHA_ONE - a, _pre(luma, a)], dtype=np.uint16)
    chroma_fixed = np.zeros((3, 5), dtype=np.uint16)
    for covered in (1, 2, 4):
        # A sample whose block the rectangle covers only partly gets that share of
        # the alpha, as for a sprite.
        ca = alpha_fixed_int(alpha8 * covered, 4)
        chroma_fixed[:, covered] = (ALPHA_ONE - ca, _pre(cb, ca), _pre(cr, ca))
    luma_fixed.flags.writeable = False
    chroma_fixed.flags.writeable = False
    return luma_fixed, chroma_fixed


def fill_rect(
    y: U8,
    u: U8,
    v: U8,
    x: int,
    y0: int,
    w: int,
    h: int,
    rgba: tuple[int, int, int, int],
) -> None:
    """Blend a solid ``w`` x ``h`` rectangle of straight RGBA colour ``rgba`` at luma
    ``(x, y0)``, in place, with the same clipping and chroma coverage rules as
    ``blend`` (it draws exactly what a solid sprite of that size would)."""
    frame_h, frame_w = y.shape
    left, top = max(x, 0), max(y0, 0)
    right, bottom = min(x + w, frame_w), min(y0 + h, frame_h)
    if rgba[3] <= 0 or left >= right or top >= bottom:
        return
    luma, chroma = _fill_fixed(rgba)
    # Luma is clipped to the frame, so the chroma samples it touches are inside too.
    blend_kernels.fill_rect(y, u, v, left, top, right, bottom, luma, chroma)


def _pre(value: float, a: int) -> int:
    return min(round(value * a), 255 * a) + ROUNDING


def warm_up() -> None:
    """Blend a sprite (opaque and translucent) and fill a rectangle on tiny planes.

    The kernels are compiled, or loaded from numba's on-disk cache, when this module
    is imported; their first calls still cost a few tenths of a millisecond of
    one-time set-up. The compositor calls this when it is built (at the media
    worker's start), so no frame pays for either.
    """
    y = np.zeros((4, 4), dtype=np.uint8)
    u = np.zeros((2, 2), dtype=np.uint8)
    v = np.zeros((2, 2), dtype=np.uint8)
    sprite = Sprite.from_rgba(np.full((3, 3, 4), 255, dtype=np.uint8))
    for opacity in (1.0, 0.5):
        blend(y, u, v, sprite, 1, 1, opacity)
    fill_rect(y, u, v, 1, 1, 2, 2, (255, 255, 255, 128))


def frame_planes(frame: av.VideoFrame, *, make_writable: bool = True) -> tuple[U8, U8, U8]:
    """Writable numpy views (Y, U, V) onto a yuv420p frame's own planes.

    Writing into them changes the frame: no copy is made. ``make_writable`` first
    asks FFmpeg to give the frame private buffers if it shares them (a decoder may
    still hold a decoded picture as a reference for the next ones, and drawing into
    that would smear the overlay into later frames); a frame that owns its buffers,
    the usual case, is not copied.
    """
    if frame.format.name != "yuv420p":
        raise ValueError(f"expected a yuv420p frame, got {frame.format.name}")
    if make_writable:
        frame.make_writable()
    width, height = frame.width, frame.height
    sizes = ((width, height), ((width + 1) // 2, (height + 1) // 2))
    views: list[U8] = []
    for index, plane in enumerate(frame.planes[:3]):
        plane_w, plane_h = sizes[min(index, 1)]
        # Rows are line_size apart (padding after each row's pixels).
        view: U8 = np.ndarray(
            (plane_h, plane_w),
            dtype=np.uint8,
            buffer=memoryview(plane),
            strides=(plane.line_size, 1),
        )
        if not view.flags.writeable:
            raise ValueError("frame planes are read-only")
        views.append(view)
    return views[0], views[1], views[2]
