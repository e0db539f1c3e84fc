"""How many 2-CTA clusters of the pair variant fit on the GPU at once (cuOccupancyMaxActiveClusters), against the
clusters its grids launch: fewer would put the last clusters in a second wave. Usage: python bench/cluster_occupancy.py"""
import ctypes

from flashmla_rt import _dependent_launch, _device, kernels, schedule


def main():
    import cupy
    device = cupy.cuda.runtime.getDevice()
    fn = kernels.decode_kernel("bfloat16", device, kernels.SEESAW_PAIR)
    lib = ctypes.CDLL("libcuda.so.1")
    sms = _device.sm_count(device)
    for rows in (128, 256):
        m_blocks = rows // schedule.BLOCK_M
        grid = (m_blocks, 1, schedule.num_sm_parts(sms, rows, 1))
        cfg = _dependent_launch.LaunchConfig(*grid, kernels.DECODE_THREADS, 1, 1, kernels.DECODE_SMEM_BYTES, None,
                                             None, 0)
        n = ctypes.c_int(-1)
        status = lib.cuOccupancyMaxActiveClusters(ctypes.byref(n), ctypes.c_void_p(fn.ptr), ctypes.byref(cfg))
        print(f"rows {rows}: grid {grid} = {grid[0] * grid[2] // 2} clusters; max active clusters {n.value} "
              f"(CUresult {status}); SMs {sms}")


if __name__ == "__main__":
    main()
