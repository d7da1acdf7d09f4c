"""Sprite blending and solid rectangles, checked against a float reference.

The reference is straight alpha-over in float on the 4:2:0 planes: luma pixel by
pixel, and each chroma sample with the mean alpha and the mean premultiplied colour
of the 2x2 luma block it covers (positions the sprite does not cover count as
transparent). The fixed-point blend must agree within one code value everywhere.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from edge_node.overlay import blend_kernels
from edge_node.overlay.blend import blend, fill_rect, warm_up
from edge_node.overlay.sprite import Sprite

Planes = tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]
W, H = 64, 48


def reference_yuv(rgb: NDArray[np.uint8]) -> NDArray[np.float64]:
    """BT.601 limited range, written out independently of the code under test."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return np.stack([y, u, v], axis=-1)


def reference_blend(
    planes: Planes, rgba: NDArray[np.uint8], x: int, y0: int, opacity: float = 1.0
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    y, u, v = (p.astype(np.float64) for p in planes)
    frame_h, frame_w = y.shape
    h, w = rgba.shape[:2]
    yuv = reference_yuv(rgba[..., :3])
    alpha = rgba[..., 3].astype(np.float64) / 255 * opacity
    # The sprite's alpha and premultiplied colour laid onto the frame (zero elsewhere).
    a_full = np.zeros((frame_h, frame_w))
    pre_full = np.zeros((frame_h, frame_w, 3))
    top, left = max(y0, 0), max(x, 0)
    bottom, right = min(y0 + h, frame_h), min(x + w, frame_w)
    if top < bottom and left < right:
        src = (slice(top - y0, bottom - y0), slice(left - x, right - x))
        a_full[top:bottom, left:right] = alpha[src]
        pre_full[top:bottom, left:right] = yuv[src] * alpha[src][..., None]
    out_y = y * (1 - a_full) + pre_full[..., 0]
    a_c = a_full.reshape(frame_h // 2, 2, frame_w // 2, 2).mean(axis=(1, 3))
    pre_c = pre_full.reshape(frame_h // 2, 2, frame_w // 2, 2, 3).mean(axis=(1, 3))
    out_u = u * (1 - a_c) + pre_c[..., 1]
    out_v = v * (1 - a_c) + pre_c[..., 2]
    return out_y, out_u, out_v


def random_planes(rng: np.random.Generator, frame_w: int = W, frame_h: int = H) -> Planes:
    return (
        rng.integers(0, 256, (frame_h, frame_w), dtype=np.uint8),
        rng.integers(0, 256, (frame_h // 2, frame_w // 2), dtype=np.uint8),
        rng.integers(0, 256, (frame_h // 2, frame_w // 2), dtype=np.uint8),
    )


def random_rgba(rng: np.random.Generator, h: int, w: int) -> NDArray[np.uint8]:
    rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    # Plenty of fully transparent and fully opaque pixels, as text has.
    kind = rng.integers(0, 4, (h, w))
    rgba[..., 3][kind == 0] = 0
    rgba[..., 3][kind == 1] = 255
    return rgba


def copy(planes: Planes) -> Planes:
    return planes[0].copy(), planes[1].copy(), planes[2].copy()


def assert_close(got: Planes, want: tuple[NDArray[np.float64], ...], tol: float = 1.0) -> None:
    for name, g, r in zip("YUV", got, want, strict=True):
        err = np.abs(g.astype(np.float64) - r)
        assert err.max() <= tol, (
            f"{name}: max error {err.max():.3f} at {np.unravel_index(err.argmax(), err.shape)}"
        )


positions_x = st.integers(-45, W + 5)
positions_y = st.integers(-45, H + 5)
sizes = st.integers(1, 40)
seeds = st.integers(0, 2**32 - 1)


@settings(max_examples=400, deadline=None)
@given(w=sizes, h=sizes, x=positions_x, y=positions_y, seed=seeds)
def test_blend_matches_float_reference(w: int, h: int, x: int, y: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    planes, rgba = random_planes(rng), random_rgba(rng, h, w)
    want = reference_blend(planes, rgba, x, y)
    blend(*planes, Sprite.from_rgba(rgba), x, y)
    assert_close(planes, want)


@settings(max_examples=200, deadline=None)
@given(
    w=sizes,
    h=sizes,
    x=positions_x,
    y=positions_y,
    seed=seeds,
    opacity=st.floats(0.0, 1.0, allow_nan=False),
)
def test_blend_with_opacity_matches_float_reference(
    w: int, h: int, x: int, y: int, seed: int, opacity: float
) -> None:
    rng = np.random.default_rng(seed)
    planes, rgba = random_planes(rng), random_rgba(rng, h, w)
    want = reference_blend(planes, rgba, x, y, opacity)
    blend(*planes, Sprite.from_rgba(rgba), x, y, opacity)
    assert_close(planes, want)


EDGE_XS = [-7, -6, -5, -1, 0, 1, 2, W - 8, W - 7, W - 6, W - 5, W - 1, W]
EDGE_YS = [-5, -4, -3, -1, 0, 1, H - 6, H - 5, H - 4, H - 1, H]


@pytest.mark.parametrize("x", EDGE_XS)
@pytest.mark.parametrize("y", EDGE_YS)
def test_odd_sprite_clipped_at_every_edge(x: int, y: int) -> None:
    rng = np.random.default_rng((x + 100) * 1000 + y + 100)
    planes, rgba = random_planes(rng), random_rgba(rng, 5, 7)
    want = reference_blend(planes, rgba, x, y)
    blend(*planes, Sprite.from_rgba(rgba), x, y)
    assert_close(planes, want)


def test_sprite_larger_than_the_frame() -> None:
    rng = np.random.default_rng(1)
    planes, rgba = random_planes(rng), random_rgba(rng, H + 31, W + 17)
    want = reference_blend(planes, rgba, -9, -13)
    blend(*planes, Sprite.from_rgba(rgba), -9, -13)
    assert_close(planes, want)


def test_large_sprite_at_both_opacities() -> None:
    rng = np.random.default_rng(2)
    planes = random_planes(rng, 640, 480)
    blend(*planes, Sprite.from_rgba(random_rgba(rng, 4, 4)), 3, 3)  # small first
    rgba = random_rgba(rng, 301, 257)  # rows far longer than one vector register
    for opacity in (1.0, 0.6):
        want = reference_blend(planes, rgba, 101, 77, opacity)
        blend(*planes, Sprite.from_rgba(rgba), 101, 77, opacity)
        assert_close(planes, want)


@settings(max_examples=100, deadline=None)
@given(w=sizes, h=sizes, x=positions_x, y=positions_y, seed=seeds)
def test_fully_transparent_sprite_leaves_the_frame_bit_identical(
    w: int, h: int, x: int, y: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    planes = random_planes(rng)
    before = copy(planes)
    rgba = random_rgba(rng, h, w)
    rgba[..., 3] = 0
    blend(*planes, Sprite.from_rgba(rgba), x, y)
    blend(*planes, Sprite.from_rgba(rgba), x, y, 0.5)
    for got, was in zip(planes, before, strict=True):
        assert np.array_equal(got, was)


@settings(max_examples=100, deadline=None)
@given(w=sizes, h=sizes, x=positions_x, y=positions_y, seed=seeds)
def test_opaque_sprite_replaces_exactly(w: int, h: int, x: int, y: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rgba = random_rgba(rng, h, w)
    rgba[..., 3] = 255
    sprite = Sprite.from_rgba(rgba)
    first, second = random_planes(rng), random_planes(rng)
    blend(*first, sprite, x, y)
    blend(*second, sprite, x, y)
    top, left = max(y, 0), max(x, 0)
    bottom, right = min(y + h, H), min(x + w, W)
    if top >= bottom or left >= right:
        return
    # Luma: the sprite's own Y, whatever was underneath (rounded from 8.8 fixed point,
    # so within half a code value and a 1/256 step of the float Y).
    got = first[0][top:bottom, left:right]
    assert np.array_equal(got, second[0][top:bottom, left:right])
    want_y = reference_yuv(rgba[..., :3])[top - y : bottom - y, left - x : right - x, 0]
    assert np.abs(got - want_y).max() <= 0.5 + 1 / 256
    # Chroma samples whose whole 2x2 block the sprite covers: independent of the
    # background too.
    rows = slice((top + 1) // 2, bottom // 2)
    cols = slice((left + 1) // 2, right // 2)
    for a, b in zip(first[1:], second[1:], strict=True):
        assert np.array_equal(a[rows, cols], b[rows, cols])


@pytest.mark.parametrize(
    ("x", "y"),
    [(-10, 5), (-11, 5), (W, 5), (W + 3, 5), (5, -8), (5, -9), (5, H), (5, H + 1), (-10, -8)],
)
def test_sprite_clipped_away_is_a_no_op(x: int, y: int) -> None:
    rng = np.random.default_rng(3)
    planes = random_planes(rng)
    before = copy(planes)
    sprite = Sprite.from_rgba(random_rgba(rng, 8, 10))
    blend(*planes, sprite, x, y)
    blend(*planes, sprite, x, y, 0.3)
    fill_rect(*planes, x, y, 10, 8, (255, 0, 0, 200))
    for got, was in zip(planes, before, strict=True):
        assert np.array_equal(got, was)


def outside_unchanged(planes: Planes, before: Planes, x: int, y: int, w: int, h: int) -> None:
    mask = np.ones((H, W), dtype=bool)
    mask[max(y, 0) : max(y + h, 0), max(x, 0) : max(x + w, 0)] = False
    assert np.array_equal(planes[0][mask], before[0][mask])
    # The chroma samples of every 2x2 block the rectangle touches may change.
    c_mask = np.ones((H // 2, W // 2), dtype=bool)
    c_top, c_left = max(y, 0) // 2, max(x, 0) // 2
    c_bottom, c_right = max((y + h + 1) // 2, 0), max((x + w + 1) // 2, 0)
    c_mask[c_top:c_bottom, c_left:c_right] = False
    for got, was in zip(planes[1:], before[1:], strict=True):
        assert np.array_equal(got[c_mask], was[c_mask])


@settings(max_examples=200, deadline=None)
@given(w=sizes, h=sizes, x=positions_x, y=positions_y, seed=seeds)
def test_blend_touches_nothing_outside_the_sprite(
    w: int, h: int, x: int, y: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    planes = random_planes(rng)
    before = copy(planes)
    rgba = random_rgba(rng, h, w)
    rgba[..., 3] = 255  # every pixel of the rectangle changes something
    blend(*planes, Sprite.from_rgba(rgba), x, y)
    outside_unchanged(planes, before, x, y, w, h)


def test_opacity_zero_and_nan_are_no_ops() -> None:
    rng = np.random.default_rng(4)
    planes = random_planes(rng)
    before = copy(planes)
    sprite = Sprite.from_rgba(random_rgba(rng, 9, 9))
    blend(*planes, sprite, 3, 3, 0.0)
    blend(*planes, sprite, 3, 3, float("nan"))
    blend(*planes, sprite, 3, 3, -1.0)
    for got, was in zip(planes, before, strict=True):
        assert np.array_equal(got, was)


def test_empty_sprite_is_a_no_op() -> None:
    rng = np.random.default_rng(5)
    planes = random_planes(rng)
    before = copy(planes)
    for shape in ((0, 0, 4), (0, 5, 4), (5, 0, 4)):
        sprite = Sprite.from_rgba(np.zeros(shape, dtype=np.uint8))
        for x, y in ((0, 0), (3, 7), (-1, -1)):
            blend(*planes, sprite, x, y)
    for got, was in zip(planes, before, strict=True):
        assert np.array_equal(got, was)


def test_blend_from_several_threads_at_once() -> None:
    # Scratch buffers are per thread: concurrent blends of different sizes must not
    # trample each other.
    rng = np.random.default_rng(6)
    errors: list[BaseException] = []

    def run(
        planes: Planes, sprite: Sprite, x: int, y: int, want: tuple[NDArray[np.float64], ...]
    ) -> None:
        try:
            for _ in range(200):
                work = copy(planes)
                blend(*work, sprite, x, y)
                assert_close(work, want)
        except BaseException as exc:
            errors.append(exc)

    threads = []
    for i in range(4):
        planes, rgba = random_planes(rng, 320, 240), random_rgba(rng, 30 + 7 * i, 90 + 13 * i)
        want = reference_blend(planes, rgba, 11 + i, 21 + i)
        args = (planes, Sprite.from_rgba(rgba), 11 + i, 21 + i, want)
        threads.append(threading.Thread(target=run, args=args))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def fixed_point_blend(
    planes: Planes, sprite: Sprite, x: int, y0: int, op: int
) -> tuple[NDArray[np.int64], ...]:
    """The fixed-point formulas of blend.py's docstring, in int64 numpy, clipped by
    hand: what the compiled kernel must produce bit for bit."""
    out = tuple(p.astype(np.int64) for p in planes)
    x += sprite.ink_x
    y0 += sprite.ink_y
    chroma = sprite.chroma(x & 1, y0 & 1)
    layers = [
        (out[0], sprite.y_inv, sprite.y_pre, x, y0),
        (out[1], chroma.inv, chroma.u_pre, x // 2, y0 // 2),
        (out[2], chroma.inv, chroma.v_pre, x // 2, y0 // 2),
    ]
    for dst, inv16, pre16, px, py in layers:
        h, w = inv16.shape
        top, left = max(py, 0), max(px, 0)
        bottom, right = min(py + h, dst.shape[0]), min(px + w, dst.shape[1])
        if top >= bottom or left >= right:
            continue
        d = dst[top:bottom, left:right]
        inv = inv16[top - py : bottom - py, left - px : right - px].astype(np.int64)
        pre = pre16[top - py : bottom - py, left - px : right - px].astype(np.int64)
        if op == 1 << 14:
            d[...] = (d * inv + pre) >> 8
        else:
            d[...] = (d * (inv * op + 256 * ((1 << 14) - op)) + pre * op + 2**21 - 128 * op) >> 22
    return out


@settings(max_examples=300, deadline=None)
@given(
    w=sizes,
    h=sizes,
    x=positions_x,
    y=positions_y,
    seed=seeds,
    op=st.one_of(st.just(1 << 14), st.integers(1, (1 << 14) - 1)),
)
def test_blend_is_the_documented_fixed_point_bit_for_bit(
    w: int, h: int, x: int, y: int, seed: int, op: int
) -> None:
    rng = np.random.default_rng(seed)
    planes, rgba = random_planes(rng), random_rgba(rng, h, w)
    sprite = Sprite.from_rgba(rgba)
    want = fixed_point_blend(planes, sprite, x, y, op)
    blend(*planes, sprite, x, y, op / (1 << 14))
    for name, got, expected in zip("YUV", planes, want, strict=True):
        assert np.array_equal(got, expected), name


@pytest.mark.parametrize("opacity", [1e-6, 0.4 / 16384, 1 / 16384, 0.25, 0.99997, 0.99999, 1.5])
def test_opacities_at_the_ends_of_the_fixed_point_range(opacity: float) -> None:
    rng = np.random.default_rng(8)
    planes, rgba = random_planes(rng), random_rgba(rng, 21, 33)
    want = reference_blend(planes, rgba, 5, 3, min(opacity, 1.0))
    blend(*planes, Sprite.from_rgba(rgba), 5, 3, opacity)
    assert_close(planes, want)


def test_opacity_terms_are_checked() -> None:
    assert blend_kernels.opacity_terms(1 << 14).tolist() == [1 << 14, 0, 2**21 - 128 * 2**14]
    for op in (0, -1, (1 << 14) + 1):
        with pytest.raises(ValueError, match="op"):
            blend_kernels.opacity_terms(op)


def test_each_kernel_has_exactly_one_compiled_version() -> None:
    # Plain arrays (as in these tests), a padded frame's strided views, both opacity
    # paths and a fill all run the one signature compiled at import: the machine code
    # these tests check is the code a frame runs, and nothing compiles on a frame.
    rng = np.random.default_rng(9)
    warm_up()
    padded = [rng.integers(0, 256, (h, w + 32), dtype=np.uint8) for h, w in ((H, W), (24, 32))]
    views = (padded[0][:, :W], padded[1][:, :32], padded[1][:, :32].copy())
    sprite = Sprite.from_rgba(random_rgba(rng, 9, 11))
    for planes in (random_planes(rng), views):
        for opacity in (1.0, 0.3):
            blend(*planes, sprite, 3, 5, opacity)
        fill_rect(*planes, 1, 1, 9, 9, (1, 2, 3, 200))
    dispatchers: Any = (blend_kernels.blend_sprite, blend_kernels.fill_rect)
    assert dispatchers[0].signatures == [blend_kernels.BLEND_SIGNATURE.args]
    assert dispatchers[1].signatures == [blend_kernels.FILL_SIGNATURE.args]


def test_planes_of_another_type_are_refused() -> None:
    rng = np.random.default_rng(10)
    sprite = Sprite.from_rgba(random_rgba(rng, 4, 4))
    y, u, v = random_planes(rng)
    with pytest.raises(TypeError):
        blend(y.astype(np.uint16), u, v, sprite, 0, 0)
    y.flags.writeable = False
    with pytest.raises(TypeError):
        blend(y, u, v, sprite, 0, 0)
    with pytest.raises(TypeError):
        fill_rect(y, u, v, 0, 0, 4, 4, (9, 9, 9, 255))


def test_sprite_planes_must_be_c_contiguous() -> None:
    planes = np.zeros((4, 6), dtype=np.uint16)
    fortran = np.asfortranarray(planes)
    alpha = np.zeros((4, 6), dtype=np.uint8)
    with pytest.raises(ValueError, match="C-contiguous"):
        Sprite((6, 4), (0, 0), fortran, planes, alpha, planes, planes)


def test_kernels_compile_uncached_where_numba_cannot_cache(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_njit: Any = numba.njit
    calls: list[bool] = []

    def njit_without_a_cache_dir(*args: object, **kwargs: object) -> object:
        calls.append(bool(kwargs.get("cache")))
        if kwargs.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available")
        return real_njit(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", njit_without_a_cache_dir)

    def double(a: int) -> int:
        return 2 * a

    with caplog.at_level(logging.WARNING, logger=blend_kernels.__name__):
        compiled = blend_kernels._compile()(double)
    assert calls == [True, False]
    assert compiled(21) == 42
    assert "cannot cache" in caplog.text


# --- fill_rect -------------------------------------------------------------------------

rgba_colours = st.tuples(
    st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)
)


@settings(max_examples=300, deadline=None)
@given(
    w=st.integers(-3, 70),
    h=st.integers(-3, 55),
    x=positions_x,
    y=positions_y,
    colour=rgba_colours,
    seed=seeds,
)
def test_fill_rect_matches_float_reference(
    w: int, h: int, x: int, y: int, colour: tuple[int, int, int, int], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    planes = random_planes(rng)
    before = copy(planes)
    solid = np.empty((max(h, 0), max(w, 0), 4), dtype=np.uint8)
    solid[...] = colour
    want = reference_blend(planes, solid, x, y)
    fill_rect(*planes, x, y, w, h, colour)
    assert_close(planes, want)
    if colour[3] == 255:
        outside_unchanged(planes, before, x, y, max(w, 0), max(h, 0))


@settings(max_examples=100, deadline=None)
@given(w=sizes, h=sizes, x=positions_x, y=positions_y, colour=rgba_colours, seed=seeds)
def test_fill_rect_draws_what_a_solid_sprite_draws(
    w: int, h: int, x: int, y: int, colour: tuple[int, int, int, int], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    filled = random_planes(rng)
    blended = copy(filled)
    solid = np.empty((h, w, 4), dtype=np.uint8)
    solid[...] = colour
    fill_rect(*filled, x, y, w, h, colour)
    blend(*blended, Sprite.from_rgba(solid), x, y)
    assert np.array_equal(filled[0], blended[0])
    for a, b in zip(filled[1:], blended[1:], strict=True):
        # The sprite keeps U, V in 8.8 fixed point, fill_rect in float: a rounding
        # tie may land one code apart.
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


# --- Sprite ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 4, 3), (4, 4), (4, 4, 5)])
def test_from_rgba_rejects_other_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        Sprite.from_rgba(np.zeros(shape, dtype=np.uint8))


def test_from_rgba_rejects_other_dtypes() -> None:
    with pytest.raises(ValueError):
        Sprite.from_rgba(np.zeros((4, 4, 4), dtype=np.float32))


def test_sprite_is_immutable() -> None:
    sprite = Sprite.from_rgba(np.full((3, 5, 4), 200, dtype=np.uint8))
    with pytest.raises(AttributeError):
        sprite.width = 9
    with pytest.raises(ValueError):
        sprite.y_pre[0, 0] = 1
    chroma = sprite.chroma(1, 1)
    with pytest.raises(ValueError):
        chroma.inv[0, 0] = 1


@pytest.mark.parametrize(("h", "w"), [(1, 1), (3, 5), (4, 6), (7, 2)])
def test_chroma_planes_per_parity(h: int, w: int) -> None:
    sprite = Sprite.from_rgba(np.full((h, w, 4), 255, dtype=np.uint8))
    nbytes = sprite.nbytes
    held = sprite.y_inv.nbytes + sprite.y_pre.nbytes
    for py in (0, 1):
        for px in (0, 1):
            planes = sprite.chroma(px, py)
            assert planes.inv.shape == ((h + py + 1) // 2, (w + px + 1) // 2)
            assert sprite.chroma(px + 2, py + 4) is planes  # cached, by parity
            held += planes.nbytes
    # Opaque sprite at even parity: interior blocks fully covered, so alpha 256.
    assert sprite.chroma(0, 0).inv[: h // 2, : w // 2].max(initial=0) == 0
    assert sprite.nbytes == nbytes >= held  # constant, and an upper bound


@pytest.mark.parametrize(("x", "y"), [(0, 0), (1, 0), (0, 1), (1, 1), (-3, -5), (W - 9, H - 7)])
def test_transparent_border_is_trimmed_without_changing_the_result(x: int, y: int) -> None:
    rng = np.random.default_rng(7)
    rgba = random_rgba(rng, 11, 13)
    rgba[..., 3] = 0
    rgba[3:8, 5:10, 3] = 255  # ink: rows 3..7, columns 5..9
    sprite = Sprite.from_rgba(rgba)
    assert (sprite.width, sprite.height) == (13, 11)
    assert (sprite.ink_x, sprite.ink_y) == (4, 2)  # rounded down to even
    assert sprite.y_inv.shape == (6, 6)
    planes = random_planes(rng)
    want = reference_blend(planes, rgba, x, y)
    blend(*planes, sprite, x, y)
    assert_close(planes, want)


def test_fully_transparent_sprite_holds_no_planes() -> None:
    sprite = Sprite.from_rgba(np.zeros((40, 300, 4), dtype=np.uint8))
    assert (sprite.width, sprite.height) == (300, 40)
    assert sprite.y_inv.size == 0
    assert sprite.nbytes < 100
