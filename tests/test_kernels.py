"""Kernel selection and the KV tensor maps' geometry (CPU: the maps' arguments are checked, not encoded)."""
import numpy as np
import pytest

from flashmla_rt import kernels
from flashmla_rt.jit import tma


@pytest.mark.parametrize("rows, name", [(1, "narrow16"), (16, "narrow16"), (17, "narrow32"), (32, "narrow32"),
                                        (33, "seesaw_one_mblock"), (64, "seesaw_one_mblock"), (65, "seesaw"),
                                        (512, "seesaw")])
def test_decode_variant_by_rows(monkeypatch, rows, name):
    monkeypatch.delenv("FLASHMLA_RT_DECODE_KERNEL", raising=False)
    assert kernels.decode_variant(rows).name == name
    monkeypatch.setenv("FLASHMLA_RT_DECODE_KERNEL", "seesaw")
    assert kernels.decode_variant(rows).source == kernels.DECODE_SOURCE
    assert kernels.decode_variant(rows).name == ("seesaw" if rows > 64 else "seesaw_one_mblock")


def test_seesaw_promotion_by_mblocks(monkeypatch):
    """One m-block (one CTA reads each block): 128-B L2 promotion; two or more: 256 B (calls 26, 76-77)."""
    promos = {}
    for v in (kernels.SEESAW, kernels.SEESAW_ONE_MBLOCK):
        calls = _captured_maps(monkeypatch, v.kv_maps, (4, 64, 1, 576), (64 * 576, 576, 576, 1))
        promos[v.name] = {c[4] for c in calls}
    assert promos == {"seesaw": {tma.L2_PROMOTION_256B}, "seesaw_one_mblock": {tma.L2_PROMOTION_128B}}


def test_narrow_shared_memory_fits():
    for v in (kernels.NARROW16, kernels.NARROW32, kernels.SEESAW):
        assert v.smem_bytes <= 227 * 1024, v


def _captured_maps(monkeypatch, maps_fn, shape, strides):
    calls = []
    monkeypatch.setattr(tma, "encode_tiled_16bit",
                        lambda addr, dims, byte_strides, box, promo: calls.append((addr, dims, byte_strides, box, promo)))
    maps_fn(0x1000, shape, strides)
    return calls


def _byte_offset(dims, byte_strides, coord):
    """Where a TMA coordinate points, from the map's own description (dim 0 is elements of 2 bytes)."""
    assert all(0 <= c < d for c, d in zip(coord, dims)), (coord, dims)
    return 2 * coord[0] + sum(c * s for c, s in zip(coord[1:], byte_strides))


@pytest.mark.parametrize("page", [16, 32, 64, 128, 256])
@pytest.mark.parametrize("h_kv, head_pad", [(1, 0), (2, 0), (2, 64)])
@pytest.mark.parametrize("maps_fn", [kernels.kv_block_map, kernels.kv_region_maps], ids=["narrow", "seesaw"])
def test_row_walking_maps_address_the_cache(monkeypatch, maps_fn, page, h_kv, head_pad):
    """Every (row element, token, tile, group, page) coordinate of the maps lands on the cache element
    k_cache[page, token, head, 64 tile + element] that the kernels mean, for strided caches too; boxes cover one
    64-token block (one page below 64) of 64 x 128-B rows per tile, as the kernels' expect_tx bytes assume."""
    n_blocks = 5
    cache = np.zeros((n_blocks, page, h_kv, 576 + head_pad), np.uint16)[..., :576]     # padded head stride
    strides = tuple(s // 2 for s in cache.strides)
    calls = _captured_maps(monkeypatch, maps_fn, cache.shape, strides)
    boxes_tiles = [9] if maps_fn is kernels.kv_block_map else [4, 1]
    assert [c[3][2] for c in calls] == boxes_tiles
    rng = np.random.default_rng(page + h_kv)
    for addr, dims, byte_strides, box, promo in calls:
        assert addr == 0x1000 and len(dims) == 5 and promo in (tma.L2_PROMOTION_128B, tma.L2_PROMOTION_256B)
        assert box[:2] == (64, 8) and box[3] == min(page, 64) // 8 and box[4] == 1
        assert all(b <= d for b, d in zip(box, dims)) and all(s % 16 == 0 for s in byte_strides)
        assert 2 * 64 * 8 * box[2] * box[3] == box[2] * 128 * min(page, 64)   # bytes per box
        for _ in range(200):
            blk, tok, hk = rng.integers(n_blocks), rng.integers(page), rng.integers(h_kv)
            tile, e = rng.integers(9), rng.integers(64)
            coord = (hk * strides[2] + e, tok % 8, tile, tok // 8, blk)     # what the kernels pass, + box offsets
            want = (blk * cache.strides[0] + tok * cache.strides[1] + hk * cache.strides[2] + 2 * (64 * tile + e))
            assert _byte_offset(dims, byte_strides, coord) == want


@pytest.mark.parametrize("b, h_kv, rows, wide", [(1, 1, 128, True), (4, 1, 16, True), (1, 2, 512, True),
                                                 (128, 1, 16, False), (64, 1, 17, False), (2, 1, 513, False)])
def test_combine_launch(b, h_kv, rows, wide):
    """The wide combine covers every row with one CTA per column quarter; the other packs 8 whole rows per CTA."""
    got_wide, grid = kernels.combine_launch(b, h_kv, rows)
    assert got_wide == wide and grid[0] == b and grid[2] == (kernels.COMBINE_COLUMN_SPLITS if wide else 1)
    assert grid[1] == (h_kv * rows if wide else -(-(h_kv * rows) // kernels.COMBINE_ROWS_PER_CTA))
