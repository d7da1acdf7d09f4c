"""The 16-bit barcode strip: draw and read back on a luma plane."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_node import barcode

HEIGHT, WIDTH = 720, 1280
POSITIONS = {"bottom_left": barcode.bottom_left(HEIGHT), "top_left": barcode.TOP_LEFT}


def plane() -> np.ndarray:
    return np.zeros((HEIGHT, WIDTH), np.uint8)


def test_positions() -> None:
    assert barcode.bottom_left(HEIGHT) == (0, HEIGHT - barcode.CELL_PX)
    assert barcode.TOP_LEFT == (0, 0)
    assert barcode.STRIP_WIDTH_PX == 256


def test_layout_msb_first_white_is_one() -> None:
    y = plane()
    barcode.draw(y, 0b1000_0000_0000_0001, 0, 0)
    assert (y[:16, :16] == barcode.Y_WHITE).all()  # MSB, leftmost cell
    assert (y[:16, 16:240] == barcode.Y_BLACK).all()
    assert (y[:16, 240:256] == barcode.Y_WHITE).all()  # LSB, rightmost cell
    # Nothing outside the strip is touched.
    assert not y[16:].any()
    assert not y[:, 256:].any()


@pytest.mark.parametrize("where", sorted(POSITIONS))
@given(value=st.integers(0, 0xFFFF))
def test_round_trip(where: str, value: int) -> None:
    x, y0 = POSITIONS[where]
    y = plane()
    barcode.draw(y, value, x, y0)
    assert barcode.read(y, x, y0) == value


def test_both_strips_coexist() -> None:
    y = plane()
    barcode.draw(y, 0x1234, *barcode.TOP_LEFT)
    barcode.draw(y, 0xBEEF, *barcode.bottom_left(HEIGHT))
    assert barcode.read(y, *barcode.TOP_LEFT) == 0x1234
    assert barcode.read(y, *barcode.bottom_left(HEIGHT)) == 0xBEEF


@given(value=st.integers(-(2**40), 2**40))
def test_values_are_taken_mod_2_16(value: int) -> None:
    y = plane()
    barcode.draw(y, value, *barcode.TOP_LEFT)
    assert barcode.read(y, *barcode.TOP_LEFT) == value % 2**16


def test_wraps_at_65536() -> None:
    y = plane()
    barcode.draw(y, 65536 + 7, 0, 0)
    assert barcode.read(y, 0, 0) == 7


@pytest.mark.parametrize("where", sorted(POSITIONS))
@given(value=st.integers(0, 0xFFFF), seed=st.integers(0, 2**32 - 1))
def test_read_survives_mild_noise(where: str, value: int, seed: int) -> None:
    x, y0 = POSITIONS[where]
    y = plane()
    barcode.draw(y, value, x, y0)
    rng = np.random.default_rng(seed)
    strip = y[y0 : y0 + barcode.CELL_PX, x : x + barcode.STRIP_WIDTH_PX].astype(np.int16)
    strip += rng.integers(-20, 21, strip.shape, dtype=np.int16)
    y[y0 : y0 + barcode.CELL_PX, x : x + barcode.STRIP_WIDTH_PX] = np.clip(strip, 0, 255)
    assert barcode.read(y, x, y0) == value


def test_read_is_not_constant() -> None:
    # Guards the round trip against a reader that ignores its input.
    y = plane()
    assert barcode.read(y, 0, 0) == 0
    y[:16, :256] = 255
    assert barcode.read(y, 0, 0) == 0xFFFF
