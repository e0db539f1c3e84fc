// Split-KV schedule on the device: one warp, no host sync, so a decode step can live in a CUDA graph.
// Same algorithms and output as flashmla_rt/schedule.py (its docstring defines the metadata layout), where a
// chunk of a request costs (64-token blocks) + kFixedOverhead, in order of preference:
// 1. whole requests in order, if a budget at most kNoCutSlackPercent past the greedy one keeps every request
//    whole (the 32 lanes try 32 budgets at once), since a cut costs an fp32 partial and the combine's merge;
// 2. best fit, for batches small enough to carry a request order (common/schedule_order.cuh): each lane plans at
//    its own budget, filling parts with the longest requests that fit whole and cutting the longest left only when
//    none does, and records its plan; the record of the lane with the least 4 * (longest part) + (requests cut)
//    is written out by the warp;
// 3. the greedy: each part gets ceil(total / parts) + kFixedOverhead, requests are taken in order and cut where
//    a budget runs out.
#include "common/nvrtc_shim.cuh"
#include "common/schedule_order.cuh"

namespace fmla {
constexpr int kBlockTokens = 64;
#ifndef FMLA_CHUNK_OVERHEAD
#define FMLA_CHUNK_OVERHEAD 5     // experiments only: a different value breaks the twin (schedule.FIXED_OVERHEAD)
#endif
constexpr int kFixedOverhead = FMLA_CHUNK_OVERHEAD;
constexpr int kNoCutSlackPercent = 3;
constexpr int kLengthTableSize = 4096;
constexpr int kBestFitSpanPercent = 8;
#ifdef FMLA_EXPECT_CHUNK_OVERHEAD
static_assert(kFixedOverhead == FMLA_EXPECT_CHUNK_OVERHEAD, "schedule.FIXED_OVERHEAD differs from kFixedOverhead");
static_assert(kLengthTableSize == FMLA_EXPECT_LENGTH_TABLE_SIZE, "schedule.LENGTH_TABLE_SIZE differs");
static_assert(kBestFitSpanPercent == FMLA_EXPECT_BEST_FIT_SPAN, "schedule.BEST_FIT_SPAN_PERCENT differs");
static_assert(kNoCutSlackPercent == FMLA_EXPECT_NO_CUT_SLACK, "schedule.NO_CUT_SLACK_PERCENT differs");
static_assert(kBlockTokens == FMLA_EXPECT_BLOCK_N, "schedule.BLOCK_N differs from kBlockTokens");
#endif

__device__ __forceinline__ int blocks_of(int seqlen) { return (max(seqlen, 0) + kBlockTokens - 1) / kBlockTokens; }

// Whether `parts` parts of `budget` each hold every request whole (greedy, in order).
__device__ bool whole_requests_fit(const int* __restrict__ seqlens, int batch, int parts, long long budget) {
  int used = 1;
  long long load = 0;
  for (int i = 0; i < batch; ++i) {
    const long long cost = blocks_of(seqlens[i]) + kFixedOverhead;
    if (cost > budget) return false;
    if (load + cost > budget) {
      if (++used > parts) return false;
      load = 0;
    }
    load += cost;
  }
  return true;
}

// The smallest of 32 budgets in [payload, payload + slack] (lane i tries payload + i * step) that keeps every
// request whole, or -1: the same candidates as schedule.no_cut_budget.
__device__ long long no_cut_budget(const int* __restrict__ seqlens, int batch, int parts, long long payload) {
  const int lane = threadIdx.x;
  const long long slack = payload * kNoCutSlackPercent / 100;
  const long long step = max(1LL, (slack + 30) / 31);
  const long long budget = payload + lane * step;
  const bool fits = lane * step <= slack && whole_requests_fit(seqlens, batch, parts, budget);
  const unsigned hits = __ballot_sync(0xffffffffu, fits);
  return hits ? payload + (__ffs(hits) - 1) * step : -1;
}

// num_splits[0..batch]: the exclusive prefix of count[], by the warp (each lane sums 8 consecutive requests).
__device__ void write_num_splits(const int* count, int batch, int* __restrict__ num_splits) {
  const int lane = threadIdx.x, per = kReorderMaxBatch / 32, first = lane * per;
  int mine = 0;
  for (int i = first; i < min(first + per, batch); ++i) mine += count[i];
  int before = mine;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int v = __shfl_up_sync(0xffffffffu, before, o);
    if (lane >= o) before += v;
  }
  before -= mine;
  if (lane == 0) num_splits[0] = 0;
  for (int i = first; i < min(first + per, batch); ++i) {
    before += count[i];
    num_splits[i + 1] = before;
  }
}

// ---- best fit (schedule.best_fit): the lengths sorted once, then every lane plans alone at its own budget,
// recording its plan's part ends and order; the best lane's record becomes the metadata.
constexpr int kBestFitMaxParts = 132;                   // parts a lane's record holds (every Hopper GPU's SMs)
#ifdef FMLA_EXPECT_BEST_FIT_MAX_PARTS
static_assert(kBestFitMaxParts == FMLA_EXPECT_BEST_FIT_MAX_PARTS, "schedule.BEST_FIT_MAX_PARTS differs");
#endif

struct BestFitSmem {
  unsigned long long key[kReorderMaxBatch];     // (blocks << 32) | request, ascending after sort_lengths
  int len[kReorderMaxBatch];                    // blocks of the request at each sorted position
  unsigned short at_most[kLengthTableSize];     // at_most[v]: how many requests have at most v blocks
  unsigned free_bits[kReorderMaxBatch / 32][32];  // [word][lane]: sorted positions this lane has not started
  unsigned char order[kReorderMaxBatch][32];    // [position][lane]: the request a lane's plan puts there
  unsigned char end_pos[kBestFitMaxParts][32];  // [part][lane]: a lane's plan's last position in each part
  int end_blk[kBestFitMaxParts][32];            // [part][lane]: ... and the block that part stops before
  int used[32];                                 // parts a lane's plan uses
  int count[kReorderMaxBatch];                  // the chosen plan's chunks per request
};

// Bitonic sort of the (blocks, request) keys by the warp, over the power of two >= batch (at least 32); padding
// keys sort last.
__device__ void sort_lengths(BestFitSmem& sm, const int* __restrict__ seqlens, int batch) {
  const int lane = threadIdx.x;
  int n = 32;
  while (n < batch) n <<= 1;
  for (int i = lane; i < n; i += 32)
    sm.key[i] = i < batch ? ((unsigned long long)blocks_of(seqlens[i]) << 32) | (unsigned)i : ~0ull;
  __syncwarp();
  for (int k = 2; k <= n; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int i = lane; i < n; i += 32) {
        const int partner = i ^ j;
        if (partner > i) {
          const unsigned long long a = sm.key[i], b = sm.key[partner];
          if ((a > b) == ((i & k) == 0)) {
            sm.key[i] = b;
            sm.key[partner] = a;
          }
        }
      }
      __syncwarp();
    }
  }
  for (int i = lane; i < batch; i += 32) sm.len[i] = (int)(sm.key[i] >> 32);
  __syncwarp();
}

// at_most[v] for v in [0, x_cap]: each lane fills a contiguous range of v, walking the sorted lengths.
__device__ void fill_length_table(BestFitSmem& sm, int batch, int x_cap) {
  const int lane = threadIdx.x, width = (x_cap + 32) / 32;
  const int v_end = min((lane + 1) * width, x_cap + 1);
  int lo = 0, hi = batch;                                  // first sorted position longer than this lane's first v
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (sm.len[mid] <= lane * width) lo = mid + 1; else hi = mid;
  }
  for (int v = lane * width, s = lo; v < v_end; ++v) {
    while (s < batch && sm.len[s] <= v) ++s;
    sm.at_most[v] = (unsigned short)s;
  }
  __syncwarp();
}

// This lane's set of sorted positions not yet started (sm.free_bits), with its smallest and largest members
// kept at hand: a query below the smallest needs no scan, and the cut takes the largest.
struct FreeSet {
  BestFitSmem& sm;
  int lo, hi;                                            // smallest and largest member (hi < lo: empty)

  __device__ FreeSet(BestFitSmem& s, int batch) : sm(s), lo(0), hi(batch - 1) {
    for (int w = 0; w < kReorderMaxBatch / 32; ++w) {
      const int n = min(max(batch - 32 * w, 0), 32);
      sm.free_bits[w][threadIdx.x] = n == 32 ? ~0u : (1u << n) - 1u;
    }
  }
  // The largest member <= pos, or -1.
  __device__ int at_or_below(int pos) const {
    if (pos > hi) pos = hi;
    for (int w = pos >> 5; pos >= lo && w >= (lo >> 5); --w) {
      unsigned bits = sm.free_bits[w][threadIdx.x];
      if (w == (pos >> 5) && (pos & 31) != 31) bits &= (2u << (pos & 31)) - 1u;
      if (bits) return 32 * w + 31 - __clz(bits);
    }
    return -1;
  }
  // The smallest member >= pos, or kReorderMaxBatch.
  __device__ int at_or_above(int pos) const {
    for (int w = pos >> 5; w < kReorderMaxBatch / 32; ++w) {
      unsigned bits = sm.free_bits[w][threadIdx.x];
      if (w == (pos >> 5)) bits &= ~0u << (pos & 31);
      if (bits) return 32 * w + __ffs(bits) - 1;
    }
    return kReorderMaxBatch;
  }
  __device__ void take(int s) {
    sm.free_bits[s >> 5][threadIdx.x] &= ~(1u << (s & 31));
    if (s == lo) lo = at_or_above(s + 1);
    if (s == hi) hi = lo > s ? -1 : at_or_below(s - 1);
  }
};

struct FitResult {
  bool fits;
  int longest, cut;                                      // the longest part's cost, requests cut
};

// schedule.best_fit by one lane at `budget`, recorded in the lane's columns of sm.order / end_pos / end_blk / used.
__device__ FitResult best_fit(BestFitSmem& sm, int batch, int parts, int budget, int max_len) {
  const int lane = threadIdx.x;
  FreeSet free(sm, batch);
  int left = batch, placed = 0, longest = 0, cut = 0;
  int carry_blk = -1, carry_len = 0;                     // the request cut by the previous part (carry_blk >= 0)
  int part = 0;
  for (; part < parts && (left > 0 || carry_blk >= 0); ++part) {
    int room = budget, end_blk = -1;
    if (carry_blk >= 0) {                                // its rest first: whole if it fits
      const int rest = carry_len - carry_blk, take = min(rest, room - kFixedOverhead);
      room -= take + kFixedOverhead;
      end_blk = carry_blk + take;
      carry_blk = take < rest ? end_blk : -1;
    }
    while (carry_blk < 0 && left > 0) {
      const int x = room - kFixedOverhead;               // the longest request that fits has x blocks or fewer
      if (x < 0) break;
      int s = free.at_or_below((x >= max_len ? batch : (int)sm.at_most[x]) - 1);
      const bool is_cut = s < 0;
      if (is_cut) {                                      // none fits whole: cut the longest one left
        if (x < 1) break;
        s = free.hi;
      }
      free.take(s);
      --left;
      const unsigned long long key = sm.key[s];
      sm.order[placed++][lane] = (unsigned char)(key & 0xffu);
      if (is_cut) {
        end_blk = carry_blk = x;
        carry_len = (int)(key >> 32);
        room = 0;
        ++cut;
      } else {
        end_blk = (int)(key >> 32);
        room -= end_blk + kFixedOverhead;
      }
    }
    if (end_blk < 0) return {false, 0, 0};               // nothing fits a part: nor will it fit a later one
    sm.end_pos[part][lane] = (unsigned char)(placed - 1);
    sm.end_blk[part][lane] = end_blk;
    longest = max(longest, budget - room);
  }
  sm.used[lane] = part;
  if (left > 0 || carry_blk >= 0) return {false, 0, 0};
  return {true, longest, cut};
}

// The first part of lane w's record whose last position is >= k (its `used` if none).
__device__ __forceinline__ int first_part_ending_at_or_after(const BestFitSmem& sm, int w, int used, int k) {
  int lo = 0, hi = used;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if ((int)sm.end_pos[mid][w] < k) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// Whether part q of lane w's record ends inside its last request (the next part continues it).
__device__ __forceinline__ bool ends_in_a_cut(const BestFitSmem& sm, const int* __restrict__ seqlens, int w, int q) {
  return sm.end_blk[q][w] < blocks_of(seqlens[sm.order[sm.end_pos[q][w]][w]]);
}

// Lane w's record as the metadata, by the warp: each part's row from its own end and its predecessor's; each
// request's chunk count from the parts that hold its position (then num_splits); columns 6-7 from the order.
__device__ void write_recorded_plan(BestFitSmem& sm, int w, const int* __restrict__ seqlens, int batch, int parts,
                                    int* __restrict__ meta, int* __restrict__ num_splits) {
  const int lane = threadIdx.x, used = sm.used[w];
  for (int p = lane; p < parts; p += 32) {
    int* row = meta + p * 8;
    if (p >= used) {
      row[0] = batch;
      row[1] = 0;
      row[2] = -1;
      row[3] = 0;
      row[4] = 0;
    } else {
      const bool carried = p > 0 && ends_in_a_cut(sm, seqlens, w, p - 1);
      const int begin_pos = p == 0 ? 0 : (int)sm.end_pos[p - 1][w] + (carried ? 0 : 1);
      row[0] = begin_pos;
      row[1] = carried ? sm.end_blk[p - 1][w] : 0;
      row[2] = sm.end_pos[p][w];
      row[3] = sm.end_blk[p][w];
      row[4] = carried ? p - first_part_ending_at_or_after(sm, w, used, begin_pos) : 0;
    }
    row[5] = 1;                                          // reordered: columns 6-7 hold the order
  }
  // Position k is in parts p0 .. q* - 1 (those ending at k, or the one it sits inside), and in q* too when q*
  // starts with its rest.
  for (int k = lane; k < batch; k += 32) {
    const int p0 = first_part_ending_at_or_after(sm, w, used, k);
    const int q = first_part_ending_at_or_after(sm, w, used, k + 1);
    const int n = q == p0 ? 1 : q - p0 + (q < used && ends_in_a_cut(sm, seqlens, w, q - 1) ? 1 : 0);
    sm.count[sm.order[k][w]] = n;
  }
  for (int i = lane; i < 2 * parts; i += 32) {          // two ids a word, 0 past the batch
    const int k = 2 * i;
    const unsigned lo = k < batch ? sm.order[k][w] : 0, hi = k + 1 < batch ? sm.order[k + 1][w] : 0;
    meta[order_offset(k) / 4] = (int)(lo | (hi << 16));
  }
  __syncwarp();
  write_num_splits(sm.count, batch, num_splits);
}

// Best fit if it applies (schedule.best_fit_applies) and some lane's budget holds it; false: plan otherwise.
__device__ bool plan_best_fit(const int* __restrict__ seqlens, int batch, int parts, long long total, int max_len,
                              int* __restrict__ meta, int* __restrict__ num_splits) {
  __shared__ BestFitSmem sm;
  const int lane = threadIdx.x;
  const long long base = (total + parts - 1) / parts;
  const long long span = base * kBestFitSpanPercent / 100 + kFixedOverhead;
  const long long step = max(1LL, (span + 30) / 31);
  const long long x_cap = min((long long)max_len, base + 31 * step - kFixedOverhead);
  if (batch > min(kOrderIdsPerRow * parts, kReorderMaxBatch) || parts > kBestFitMaxParts || x_cap >= kLengthTableSize)
    return false;                                        // (schedule.best_fit_applies)
  sort_lengths(sm, seqlens, batch);                      // (budgets then fit in an int)
  fill_length_table(sm, batch, (int)x_cap);
  const FitResult r = best_fit(sm, batch, parts, (int)(base + lane * step), max_len);
  // The least (score, lane): score = 4 * longest + cut, so ties go to the smaller budget.
  unsigned long long key = r.fits ? ((unsigned long long)(4 * r.longest + r.cut) << 5) | (unsigned)lane : ~0ull;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) key = min(key, __shfl_xor_sync(0xffffffffu, key, o));
  if (key == ~0ull) return false;
  __syncwarp();
  write_recorded_plan(sm, (int)(key & 31), seqlens, batch, parts, meta, num_splits);
  return true;
}
}  // namespace fmla

extern "C" __global__ void __launch_bounds__(32) mla_metadata(const int* __restrict__ seqlens, int batch,
                                                               int num_parts, int* __restrict__ meta,
                                                               int* __restrict__ num_splits) {
  using namespace fmla;
  const int lane = threadIdx.x;
  long long total = 0;                                     // sum of (blocks + overhead) over requests
  for (int i = lane; i < batch; i += 32) total += blocks_of(seqlens[i]) + kFixedOverhead;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) total += __shfl_xor_sync(0xffffffffu, total, o);
  int max_len = 0;                                         // the longest request's blocks
  for (int i = lane; i < batch; i += 32) max_len = max(max_len, blocks_of(seqlens[i]));
  max_len = __reduce_max_sync(0xffffffffu, max_len);
  const long long even_payload = (total + num_parts - 1) / num_parts + kFixedOverhead;
  const long long whole_budget = no_cut_budget(seqlens, batch, num_parts, even_payload);
  if (whole_budget < 0 && plan_best_fit(seqlens, batch, num_parts, total, max_len, meta, num_splits)) return;
  if (lane != 0) return;

  const bool cut = whole_budget < 0;
  const long long payload = cut ? even_payload : whole_budget;
  int req = 0, blk = 0, split = 0, cum = 0;
  num_splits[0] = 0;
  for (int part = 0; part < num_parts; ++part) {
    const int begin_req = req, begin_blk = blk, begin_split = split;
    long long budget = payload;
    int end_req = -1, end_blk = 0;
    while (req < batch) {
      const int n = blocks_of(seqlens[req]);
      const long long remaining = n - blk;
      if (remaining + kFixedOverhead <= budget) {          // the rest of this request fits
        budget -= remaining + kFixedOverhead;
        end_req = req;
        end_blk = n;
        cum += split + 1;
        num_splits[req + 1] = cum;
        ++req;
        blk = 0;
        split = 0;
      } else {                                             // cut: take what the budget allows
        const long long take = budget - kFixedOverhead;
        if (take > 0 && cut) {
          end_req = req;
          blk += (int)take;
          end_blk = blk;
          ++split;
        }
        break;
      }
    }
    int* row = meta + part * 8;
    const bool empty = end_req < 0;
    row[0] = empty ? batch : begin_req;
    row[1] = empty ? 0 : begin_blk;
    row[2] = end_req;
    row[3] = empty ? 0 : end_blk;
    row[4] = empty ? 0 : begin_split;
    row[5] = row[6] = row[7] = 0;                          // in request order
  }
}
