"""Fixed-point alpha blending of sprites and solid rectangles into yuv420p planes.

This is the per-frame hot path of the compositor. It works in place on the frame's
own planes (``frame_planes``), touches only the rectangle being drawn (clipped to the
frame), and does integer arithmetic on uint16 (uint32 when fading), so its cost grows
with the overlay's area and never with the frame's size. It must never copy a frame,
allocate a frame-sized temporary, or loop over pixels in Python.

Per plane, with the sprite's fixed-point planes (see ``sprite.py``)::

    dst = (dst * inv + pre) >> 8        # inv = 256 - alpha, pre = value * alpha + 128

and with an opacity ``o`` (``op = round(o * 2**14)``), in uint32 (the largest
intermediate, ``255 * 2**22 + 65408 * 2**14``, is about half of 2**32)::

    dst = (dst * (inv * op + 256 * (2**14 - op)) + pre * op + 2**21 - 128 * op) >> 22

Scratch buffers are per thread, grown on demand and reused: blending allocates
nothing once they have reached the size of the largest sprite.
"""

from __future__ import annotations

import threading

import av
import numpy as np
from numpy.typing import NDArray

from edge_node.overlay.sprite import ALPHA_ONE, ROUNDING, Sprite, alpha_fixed_int, yuv_of_rgb

U8 = NDArray[np.uint8]
U16 = NDArray[np.uint16]
U32 = NDArray[np.uint32]

_OPACITY_ONE = 1 << 14
_OPACITY_SHIFT = 22  # 8 bits of alpha + 14 bits of opacity

_scratch = threading.local()
_MAX_SCRATCH_VIEWS = 1024

# 0-d arrays of the working dtype: numpy resolves a ufunc on same-typed operands
# fastest, and at the size of a text sprite the per-call overhead is most of the cost.
_SHIFT16 = np.array(8, dtype=np.uint16)
_SHIFT32 = np.array(_OPACITY_SHIFT, dtype=np.uint32)


def _scratch16(rows: int, cols: int) -> U16:
    """A per-thread uint16 scratch array of this shape (contents undefined)."""
    try:
        views: dict[tuple[int, int], U16] = _scratch.views16
    except AttributeError:
        views = _scratch.views16 = {}
    view = views.get((rows, cols))
    if view is None:
        # Views of one growing buffer, memoised by shape: building a view costs more
        # than the arithmetic on a small chroma plane.
        n = rows * cols
        buf: U16 | None = getattr(_scratch, "u16", None)
        if buf is None or buf.size < n or len(views) >= _MAX_SCRATCH_VIEWS:
            views.clear()
            if buf is None or buf.size < n:
                buf = np.empty(max(n, 1 << 16), dtype=np.uint16)
                _scratch.u16 = buf
        view = views[(rows, cols)] = buf[:n].reshape(rows, cols)
    return view


def _scratch32(rows: int, cols: int) -> tuple[U32, U32]:
    n = rows * cols
    buf: U32 | None = getattr(_scratch, "u32", None)
    if buf is None or buf.size < 2 * n:
        buf = np.empty(max(2 * n, 1 << 16), dtype=np.uint32)
        _scratch.u32 = buf
    return buf[:n].reshape(rows, cols), buf[n : 2 * n].reshape(rows, cols)


def _blend_plane(dst: U8, inv: U16, pre: U16, op: int) -> None:
    if op == _OPACITY_ONE:
        t = _scratch16(*dst.shape)
        t[...] = dst
        np.multiply(t, inv, t)
        np.add(t, pre, t)
        np.right_shift(t, _SHIFT16, t)
        dst[...] = t
        return
    t32, k32 = _scratch32(*dst.shape)
    t32[...] = inv
    np.multiply(t32, np.array(op, dtype=np.uint32), t32)
    np.add(t32, np.array(ALPHA_ONE * (_OPACITY_ONE - op), dtype=np.uint32), t32)
    k32[...] = dst
    np.multiply(t32, k32, t32)
    k32[...] = pre
    np.multiply(k32, np.array(op, dtype=np.uint32), k32)
    np.add(t32, k32, t32)
    bias = (1 << (_OPACITY_SHIFT - 1)) - ROUNDING * op
    np.add(t32, np.array(bias, dtype=np.uint32), t32)
    np.right_shift(t32, _SHIFT32, t32)
    dst[...] = t32


def _opacity_fixed(opacity: float) -> int:
    if not opacity > 0.0:  # also catches NaN
        return 0
    if opacity >= 1.0:
        return _OPACITY_ONE
    return int(opacity * _OPACITY_ONE + 0.5)


def blend(y: U8, u: U8, v: U8, sprite: Sprite, x: int, y0: int, opacity: float = 1.0) -> None:
    """Blend ``sprite`` with its top-left corner at luma ``(x, y0)`` into the yuv420p
    planes ``y`` (H x W), ``u`` and ``v`` (ceil(H/2) x ceil(W/2)), in place.

    Any position is allowed: the sprite is clipped at every edge, and one entirely
    outside the frame is a no-op. ``opacity`` (0..1) scales the sprite's alpha.
    """
    op = _OPACITY_ONE if opacity >= 1.0 else _opacity_fixed(opacity)
    if op == 0 or sprite.y_inv.size == 0:
        return
    # The planes cover the sprite's ink box; its offset is even: same parities.
    x += sprite.ink_x
    y0 += sprite.ink_y
    if not _blend_clipped(y, sprite.y_inv, sprite.y_pre, x, y0, op):
        return  # wholly outside the frame
    planes = sprite.chroma(x & 1, y0 & 1)
    # Floor division puts a sprite at x = -1 on chroma column -1: right for negatives.
    _blend_clipped(u, planes.inv, planes.u_pre, x >> 1, y0 >> 1, op)
    _blend_clipped(v, planes.inv, planes.v_pre, x >> 1, y0 >> 1, op)


def _blend_clipped(dst: U8, inv: U16, pre: U16, x: int, y: int, op: int) -> bool:
    """Blend ``inv``/``pre`` at ``(x, y)`` of ``dst``, clipped to ``dst``; False when
    nothing of it is inside."""
    h, w = inv.shape
    dst_h, dst_w = dst.shape
    if x >= 0 and y >= 0 and x + w <= dst_w and y + h <= dst_h:
        # The common case, checked first: wholly inside, nothing to clip.
        _blend_plane(dst[y : y + h, x : x + w], inv, pre, op)
        return True
    left = x if x > 0 else 0
    top = y if y > 0 else 0
    right = x + w if x + w < dst_w else dst_w
    bottom = y + h if y + h < dst_h else dst_h
    if left >= right or top >= bottom:
        return False
    rows = slice(top - y, bottom - y)
    cols = slice(left - x, right - x)
    _blend_plane(dst[top:bottom, left:right], inv[rows, cols], pre[rows, cols], op)
    return True


def _fill_plane(dst: U8, inv: int, pre: int) -> None:
    if inv == 0:
        dst[...] = pre >> 8
        return
    if dst.size == 1:
        # The corners of an odd rectangle's chroma: numpy takes a slow path on
        # one-element arrays, plain Python is four times faster.
        dst.flat[0] = (int(dst.flat[0]) * inv + pre) >> 8
        return
    t = _scratch16(*dst.shape)
    t[...] = dst
    np.multiply(t, np.array(inv, dtype=np.uint16), t)
    np.add(t, np.array(pre, dtype=np.uint16), t)
    np.right_shift(t, _SHIFT16, t)
    dst[...] = t


def _chroma_spans(start: int, stop: int) -> list[tuple[slice, int]]:
    """The chroma indices covering luma ``[start, stop)``, grouped by how many of each
    sample's two luma positions the range covers (2 inside, 1 at an odd edge): at
    most two slices, the two edges sharing one (strided) slice."""
    first, last = start >> 1, (stop - 1) >> 1
    if first == last:
        return [(slice(first, first + 1), stop - start)]
    spans = []
    lo, hi = first + (start & 1), last + 1 - (stop & 1)
    if hi > lo:
        spans.append((slice(lo, hi), 2))
    if start & 1 and stop & 1:
        spans.append((slice(first, last + 1, last - first), 1))
    elif start & 1:
        spans.append((slice(first, first + 1), 1))
    elif stop & 1:
        spans.append((slice(last, last + 1), 1))
    return spans


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
    alpha8 = max(0, min(255, int(rgba[3])))
    frame_h, frame_w = y.shape
    left, top = max(x, 0), max(y0, 0)
    right, bottom = min(x + w, frame_w), min(y0 + h, frame_h)
    if alpha8 == 0 or left >= right or top >= bottom:
        return
    luma, cb, cr = yuv_of_rgb(int(rgba[0]), int(rgba[1]), int(rgba[2]))

    a = alpha_fixed_int(alpha8, 1)
    _fill_plane(y[top:bottom, left:right], ALPHA_ONE - a, _pre(luma, a))

    # Luma is clipped to the frame, so these indices are inside the chroma planes.
    for rows, n_rows in _chroma_spans(top, bottom):
        for cols, n_cols in _chroma_spans(left, right):
            # A sample whose block the rectangle covers only partly gets that share
            # of the alpha, as for a sprite.
            a = alpha_fixed_int(alpha8 * n_rows * n_cols, 4)
            if a == 0:
                continue
            _fill_plane(u[rows, cols], ALPHA_ONE - a, _pre(cb, a))
            _fill_plane(v[rows, cols], ALPHA_ONE - a, _pre(cr, a))


def _pre(value: float, a: int) -> int:
    return min(round(value * a), 255 * a) + ROUNDING


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
