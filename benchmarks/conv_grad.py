"""Weight gradient of the stride-1 3x3 convs on CPU: formulations compared.

  python benchmarks/conv_grad.py          # 7 shapes, 17 formulations, 7 runs,
                                          # 2-device and XLA-flag children (~5 min)
  python benchmarks/conv_grad.py --quick  # 64x64 and 32x32, 10 formulations,
                                          # 5 runs, no children but torch (~1 min)
  python benchmarks/conv_grad.py --help

dW[ky, kx, ci, co] = sum_{b,h,w} x_pad[b, h+ky, w+kx, ci] * dy[b, h, w, co] for
NHWC x, HWIO kernel, zero padding 1, float32, Cout 20. Every formulation is
checked against `jax.vjp` of `lax.conv_general_dilated` (rel err = max |diff| /
max |reference|) and against float64 numpy (err f64), and timed under
`jax.jit` both at top level and inside a `lax.scan` over `--scan_steps`
different (x, dy) pairs (the model scans its dense blocks, and XLA:CPU treats
convs in loop bodies differently). Times are the median of `--repeats` runs
after `--warmup` runs; the formulations of one (shape, mode) are timed
round-robin, one run each in turn (each round starting one formulation
later), so that load from other processes hits all of them alike; the load
average is printed per row. A formulation over 20x slower than the fastest is
timed once (runs=1). Scan times are per step. GFLOP/s counts
2*B*H*W*9*Cin*Cout per step (useful work, not the padding).

Child processes of this script (XLA flags are read once per process):
  * PyTorch's weight gradient (`torch.nn.grad.conv2d_weight`, 2 and 1
    threads) at top level (next to XLA's thread pool its OpenMP threads ran
    several times slower);
  * `--host_devices` (default 2): shard_map over that many XLA CPU devices,
    the batch split between them, as the trainer does with one device per core;
  * one child per `--xla_flag_sets` entry.

What XLA:CPU does here (jaxlib 0.10.2): a stride-1 NHWC x HWIO conv, the
baseline included, becomes one YNNPACK call (`__ynn_fusion` in the optimised
HLO) at top level and in loop bodies alike; pinning the process to one core
with taskset did not slow the baseline down, so that call seems to use one
core. Dots go to YNNPACK only in the plain A @ B layout ([M, K] x [K, N]),
otherwise to Eigen. The baseline's conv has the whole image as its kernel
(64x64 taps, 16 contracted features each) and a 3x3 output; on tiles of
~2048 output positions it runs ~1.3-1.6x faster per position (cache), and at
top level XLA also runs independent tiles on different cores. None of the
flags swept helps: without YNNPACK for convs (Eigen) the baseline is ~1.3x and
the tiles ~2x slower; the other flags leave the YNNPACK conv in place.

Formulations (`--formulations`):
  baseline      the current `_conv_canonical_grads_bwd`: x's channels as the
                batch, its batch as the contracted features, one NHWC x HWIO conv.
  tiled         `weight_grad_tiled`: the baseline conv on tiles of whole output
                rows x a few images (`tile_sizes`: ~2048 output positions, 4
                images; untiled when the input has <= 2048 positions), summed.
  tileRxM       the same with fixed tiles of R rows x M images.
  xla_vjp       `jax.vjp` of the conv with respect to the kernel (XLA's own).
  batch2/4      baseline on batch chunks of 8 / 4 images, summed.
  bands2/4      baseline on 2 / 4 bands of image rows (with halo), summed.
  dn_chwn       the same contraction through dimension_numbers (CHWN, IHWO,
                NHWC) instead of explicit transposes; dn_hwnc writes HWIO
                directly (out spec HWNC).
  flat9         x padded and flattened to rows [N=B*Hp*Wp, Cin]; dy padded to
                the same grid. Tap (ky, kx) is the plain matrix product
                X[off:off+T]^T @ D[0:T], off = ky*Wp + kx (no im2col copy).
  flat_x3       stack 3 horizontal shifts of X ([N, 3*Cin]); 3 products, one per
                kernel row, using row offsets ky*Wp.
  flat_x3d3     stack 3 horizontal shifts of X and 3 vertical shifts of D
                ([N, 3*Cout]); ONE product [3*Cin, N] x [N, 3*Cout] gives all
                nine taps as its 3x3 blocks (3x memory, not 9x).
  flat_x3d3_t   the same with channel-major operands ([3*Cin, N] x [3*Cout, N]^T).
  flat_x3d3_k2  flat_x3d3 with N split in 2 (a batched product, then a sum).
  flat_x3d3_nn  flat_x3d3 as a plain [3*Cin, N] @ [N, 3*Cout] (YNNPACK's layout).
  flat_img_nn   flat_x3d3_nn per image inside a lax.scan (cache-sized operands).
  patches_h     conv_general_dilated_patches over the 3 horizontal taps only
                ([B, Hp, W, 3*Cin]), then 3 row-offset products.
Also tried while writing this and dropped (all slower than the baseline): the
flat_x3d3 product per chunk of 2/4 images in a scan; x's 3 horizontal shifts
folded into the contracted features ([3*Cin, Hp, 1, W*B] conv); dy as the
conv's lhs and x as its kernel (~10x slower: not taken by YNNPACK).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

# Batch 16: the training step on one XLA device; batch 8: one device's share
# when the trainer gives XLA one CPU device per core (2 here).
ALL_SHAPES = ['16x64x64x20', '16x32x32x20', '16x16x16x20', '16x8x8x20',
              '16x64x64x3', '8x64x64x20', '8x32x32x20']
QUICK_SHAPES = ['16x64x64x20', '16x32x32x20']
ALL_FORMULATIONS = ['baseline', 'tiled', 'tile8x4', 'tile16x4', 'tile4x8',
                    'tile8x8', 'xla_vjp', 'batch2', 'batch4', 'bands2',
                    'bands4', 'dn_hwnc', 'flat9', 'flat_x3d3', 'flat_x3d3_nn',
                    'flat_img_nn', 'patches_h']
# Also available with --formulations (slower than flat_x3d3/dn_hwnc in every
# earlier run, so left out of the default run to keep it under 5 minutes).
EXTRA_FORMULATIONS = ['dn_chwn', 'flat_x3', 'flat_x3d3_t', 'flat_x3d3_k2']
QUICK_FORMULATIONS = ['baseline', 'tiled', 'tile8x4', 'tile16x4', 'xla_vjp',
                      'batch2', 'bands2', 'dn_hwnc', 'flat_x3d3_nn',
                      'flat_img_nn']
# Measured in a child process per XLA flag set.
FLAG_FORMULATIONS = ['baseline', 'tiled', 'xla_vjp', 'flat_x3d3_nn']
# Flags of this jaxlib (0.10.2) that plausibly change the conv/dot path. By
# default XLA:CPU hands stride-1 convs, and dots in the plain A @ B layout, to
# YNNPACK (`__ynn_fusion` in the optimised HLO); Eigen gets the rest.
DEFAULT_FLAG_SETS = [
    # Convs back to Eigen.
    '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution',
    # Convs to XNNPACK if it takes them, else Eigen.
    '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution '
    '--xla_cpu_experimental_xnn_fusion_type=+individual_convolution',
    '--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY',
    '--xla_cpu_use_xnnpack=false',
    '--xla_cpu_use_onednn=true',
    '--xla_cpu_enable_fast_math=true',
]
COUT = 20
KH = KW = 3
PAD = ((1, 1), (1, 1))


def parse_args(argv=None):
  p = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--quick', action='store_true',
                 help='64x64 and 32x32 shapes, fewer formulations, 5 runs, '
                 'no XLA flag sweep (about 1 minute).')
  p.add_argument('--shapes', default=None,
                 help='Comma list of BxHxWxCin (Cout is %d). Default: %s.' %
                 (COUT, ','.join(ALL_SHAPES)))
  p.add_argument('--formulations', default=None,
                 help='Comma list of formulations (see the docstring). '
                 'Default: all; with --quick: %s.' % ','.join(QUICK_FORMULATIONS))
  p.add_argument('--repeats', type=int, default=None,
                 help='Timed runs per (formulation, shape, mode): default 7, '
                 '5 with --quick.')
  p.add_argument('--warmup', type=int, default=1, help='Untimed runs.')
  p.add_argument('--scan_steps', type=int, default=4,
                 help='Steps of the lax.scan mode.')
  p.add_argument('--modes', default='top,scan', help='top, scan or both.')
  p.add_argument('--xla_flag_sets', default=None,
                 help='Semicolon-separated XLA_FLAGS values, each measured in '
                 'a child process; pass it as --xla_flag_sets=VALUE ("" '
                 'for none). Default: a sweep of '
                 'xnnpack/ynnpack/onednn/fast-math flags (none with --quick).')
  p.add_argument('--flag_shapes', default='16x64x64x20,16x32x32x20',
                 help='Shapes measured for each XLA flag set.')
  p.add_argument('--no_torch', action='store_true', help='Skip PyTorch.')
  p.add_argument('--host_devices', type=int, default=None,
                 help='Also measure --device_formulations under shard_map over '
                 'this many XLA CPU devices (the batch split between them, as '
                 'the trainer does with one device per core), in a child '
                 'process. Default: 2, none with --quick; 1 to skip.')
  p.add_argument('--device_formulations',
                 default='baseline,tiled,tile8x4,tile16x4,batch2,flat_img_nn',
                 help='Formulations for the --host_devices child (not '
                 'xla_vjp: inside shard_map its kernel cotangent is psum-ed '
                 'already).')
  p.add_argument('--devices', type=int, default=1,
                 help='Internal (--worker): shard_map over this many devices.')
  p.add_argument('--worker', action='store_true',
                 help='Internal: print JSON rows only (used for flag sets).')
  p.add_argument('--torch_worker', action='store_true',
                 help='Internal: PyTorch rows as JSON (own process).')
  args = p.parse_args(argv)
  if args.shapes is None:
    args.shapes = ','.join(QUICK_SHAPES if args.quick else ALL_SHAPES)
  if args.formulations is None:
    args.formulations = ','.join(QUICK_FORMULATIONS if args.quick else
                                 ALL_FORMULATIONS)
  if args.repeats is None:
    args.repeats = 5 if args.quick else 7
  if args.host_devices is None:
    args.host_devices = 1 if args.quick else 2
  if args.xla_flag_sets is None:
    args.xla_flag_sets = '' if args.quick else ';'.join(DEFAULT_FLAG_SETS)
  return args


# ---------------------------------------------------------------- formulations
# Everything below takes x [B, H, W, Cin], dy [B, Ho, Wo, Cout] and the padding
# ((top, bottom), (left, right)) and returns dW [KH, KW, Cin, Cout].

def _jax():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  return jax, jnp


def f_baseline(x, dy, padding):
  jax, _ = _jax()
  return jax.lax.conv_general_dilated(
      x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3), (1, 1), padding,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC')).transpose(1, 2, 0, 3)


def f_xla_vjp(x, dy, padding):
  jax, jnp = _jax()
  kernel = jnp.zeros((KH, KW, x.shape[3], dy.shape[3]), x.dtype)
  conv = lambda k: jax.lax.conv_general_dilated(
      x, k, (1, 1), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  _, vjp = jax.vjp(conv, kernel)
  return vjp(dy)[0]


def _batch_chunks(n):
  def f(x, dy, padding):
    b = x.shape[0]
    assert b % n == 0
    s = b // n
    out = f_baseline(x[:s], dy[:s], padding)
    for i in range(1, n):
      out = out + f_baseline(x[i * s:(i + 1) * s], dy[i * s:(i + 1) * s],
                             padding)
    return out
  return f


def _bands(n):
  def f(x, dy, padding):
    _, jnp = _jax()
    (top, bottom), (left, right) = padding
    xp = jnp.pad(x, ((0, 0), (top, bottom), (0, 0), (0, 0)))
    ho = dy.shape[1]
    assert ho % n == 0
    s = ho // n
    out = None
    for i in range(n):
      part = f_baseline(xp[:, i * s:i * s + s + KH - 1], dy[:, i * s:(i + 1) * s],
                        ((0, 0), (left, right)))
      out = part if out is None else out + part
    return out
  return f


def f_dn_chwn(x, dy, padding):
  jax, _ = _jax()
  return jax.lax.conv_general_dilated(
      x, dy, (1, 1), padding,
      dimension_numbers=('CHWN', 'IHWO', 'NHWC')).transpose(1, 2, 0, 3)


def f_dn_hwnc(x, dy, padding):
  jax, _ = _jax()
  return jax.lax.conv_general_dilated(
      x, dy, (1, 1), padding, dimension_numbers=('CHWN', 'IHWO', 'HWNC'))


def _flat(x, dy, padding):
  """Padded x and dy on one grid, flattened: X [N, Cin], D [N, Cout].

  With Wp the padded width, tap (ky, kx) reads X[q + ky*Wp + kx] for output
  position q; dy is zero outside its Ho x Wo corner of each Hp x Wp image, so a
  read never crosses into the next image where dy is non-zero.
  """
  _, jnp = _jax()
  (top, bottom), (left, right) = padding
  b, h, w, cin = x.shape
  hp, wp = h + top + bottom, w + left + right
  _, ho, wo, cout = dy.shape
  assert (ho, wo) == (hp - KH + 1, wp - KW + 1)
  xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  dp = jnp.pad(dy, ((0, 0), (0, hp - ho), (0, wp - wo), (0, 0)))
  return xp.reshape(b * hp * wp, cin), dp.reshape(b * hp * wp, cout), wp


def _mm_tn(a, b):
  """a [T, M]^T @ b [T, N] -> [M, N]."""
  jax, _ = _jax()
  return jax.lax.dot_general(a, b, (((0,), (0,)), ((), ())))


def f_flat9(x, dy, padding):
  _, jnp = _jax()
  xf, df, wp = _flat(x, dy, padding)
  n = df.shape[0]
  t = n - (KH - 1) * wp - (KW - 1)  # every non-zero row of D lies below t
  taps = [_mm_tn(xf[ky * wp + kx:ky * wp + kx + t], df[:t])
          for ky in range(KH) for kx in range(KW)]
  return jnp.stack(taps).reshape(KH, KW, x.shape[3], dy.shape[3])


def _x3(xf):
  """[N, Cin] -> [N, KW*Cin]: row q holds X[q], X[q+1], X[q+2]."""
  _, jnp = _jax()
  xe = jnp.pad(xf, ((0, KW - 1), (0, 0)))
  n = xf.shape[0]
  return jnp.concatenate([xe[kx:kx + n] for kx in range(KW)], axis=1)


def f_flat_x3(x, dy, padding):
  _, jnp = _jax()
  xf, df, wp = _flat(x, dy, padding)
  x3 = _x3(xf)
  t = df.shape[0] - (KH - 1) * wp
  rows = [_mm_tn(x3[ky * wp:ky * wp + t], df[:t]) for ky in range(KH)]
  # rows[ky]: [KW*Cin, Cout] with kx major.
  return jnp.stack(rows).reshape(KH, KW, x.shape[3], dy.shape[3])


def _d3(df, wp):
  """[N, Cout] -> [N, KH*Cout]: row q holds D[q], D[q-Wp], D[q-2Wp] (0 if <0)."""
  _, jnp = _jax()
  n = df.shape[0]
  de = jnp.pad(df, (((KH - 1) * wp, 0), (0, 0)))
  return jnp.concatenate(
      [de[(KH - 1 - ky) * wp:(KH - 1 - ky) * wp + n] for ky in range(KH)],
      axis=1)


def _blocks_to_hwio(g, cin, cout):
  """[KW*Cin, KH*Cout] (block (kx, ky)) -> [KH, KW, Cin, Cout]."""
  return g.reshape(KW, cin, KH, cout).transpose(2, 0, 1, 3)


def f_flat_x3d3(x, dy, padding):
  xf, df, wp = _flat(x, dy, padding)
  g = _mm_tn(_x3(xf), _d3(df, wp))
  return _blocks_to_hwio(g, x.shape[3], dy.shape[3])


def f_flat_x3d3_t(x, dy, padding):
  """Channel-major operands: [KW*Cin, N] x [KH*Cout, N]^T."""
  jax, jnp = _jax()
  (top, bottom), (left, right) = padding
  b, h, w, cin = x.shape
  hp, wp = h + top + bottom, w + left + right
  _, ho, wo, cout = dy.shape
  n = b * hp * wp
  xt = jnp.pad(x.transpose(3, 0, 1, 2),
               ((0, 0), (0, 0), (top, bottom), (left, right))).reshape(cin, n)
  dt = jnp.pad(dy.transpose(3, 0, 1, 2),
               ((0, 0), (0, 0), (0, hp - ho), (0, wp - wo))).reshape(cout, n)
  xe = jnp.pad(xt, ((0, 0), (0, KW - 1)))
  x3 = jnp.concatenate([xe[:, kx:kx + n] for kx in range(KW)], axis=0)
  de = jnp.pad(dt, ((0, 0), ((KH - 1) * wp, 0)))
  d3 = jnp.concatenate(
      [de[:, (KH - 1 - ky) * wp:(KH - 1 - ky) * wp + n] for ky in range(KH)],
      axis=0)
  g = jax.lax.dot_general(x3, d3, (((1,), (1,)), ((), ())))
  return _blocks_to_hwio(g, cin, cout)


def f_flat_x3d3_k2(x, dy, padding):
  jax, _ = _jax()
  xf, df, wp = _flat(x, dy, padding)
  x3, d3 = _x3(xf), _d3(df, wp)
  n = x3.shape[0]
  assert n % 2 == 0
  g = jax.lax.dot_general(x3.reshape(2, n // 2, -1), d3.reshape(2, n // 2, -1),
                          (((1,), (1,)), ((0,), (0,)))).sum(0)
  return _blocks_to_hwio(g, x.shape[3], dy.shape[3])


def f_patches_h(x, dy, padding):
  jax, jnp = _jax()
  (top, bottom), (left, right) = padding
  b, h, w, cin = x.shape
  _, ho, wo, cout = dy.shape
  xp = jnp.pad(x, ((0, 0), (top, bottom), (0, 0), (0, 0)))
  # [B, Hp, Wo, Cin*KW], feature order (ci, kx).
  pat = jax.lax.conv_general_dilated_patches(
      xp, (1, KW), (1, 1), ((0, 0), (left, right)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  rows = [jnp.einsum('bhwk,bhwo->ko', pat[:, ky:ky + ho], dy)
          for ky in range(KH)]
  g = jnp.stack(rows).reshape(KH, cin, KW, cout)
  return g.transpose(0, 2, 1, 3)


def f_flat_x3d3_nn(x, dy, padding):
  """flat_x3d3 with the [KW*Cin, N] operand channel-major: a plain A @ B, the
  one dot layout XLA:CPU hands to YNNPACK (the others go to Eigen)."""
  _, jnp = _jax()
  (top, bottom), (left, right) = padding
  b, h, w, cin = x.shape
  hp, wp = h + top + bottom, w + left + right
  n = b * hp * wp
  xt = jnp.pad(x.transpose(3, 0, 1, 2),
               ((0, 0), (0, 0), (top, bottom), (left, right))).reshape(cin, n)
  xe = jnp.pad(xt, ((0, 0), (0, KW - 1)))
  x3 = jnp.concatenate([xe[:, kx:kx + n] for kx in range(KW)], axis=0)
  _, df, wp = _flat(x, dy, padding)
  return _blocks_to_hwio(x3 @ _d3(df, wp), cin, dy.shape[3])


def f_flat_img_nn(x, dy, padding):
  """flat_x3d3_nn one image at a time in a lax.scan (operands stay in cache)."""
  jax, jnp = _jax()
  def body(acc, xd):
    return acc + f_flat_x3d3_nn(xd[0][None], xd[1][None], padding), None
  acc0 = jnp.zeros((KH, KW, x.shape[3], dy.shape[3]), x.dtype)
  return jax.lax.scan(body, acc0, (x, dy))[0]


def tile_sizes(batch, out_h, out_w, target=2048, images=4):
  """(rows, images) per tile: about `target` output positions, whole rows."""
  if batch * out_h * out_w <= target:
    return out_h, batch
  images = min(batch, images)
  return max(1, min(out_h, target // (out_w * images))), images


def weight_grad_tiled(x, dy, padding, tile=None, precision=None):
  """dW [KH, KW, Cin, Cout] of a stride-1 NHWC x HWIO conv, groups == 1.

  The baseline's transposed conv (x's channels as the batch, its images as
  the contracted features) on tiles of `rows` output rows x `images` images,
  summed. XLA:CPU runs each of these convs as one single-threaded YNNPACK
  call; on the whole 16x64x64 input its working set falls out of cache, on
  ~2048-position tiles it does not, and at top level XLA also runs independent
  tiles on different cores.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  (top, bottom), (left, right) = padding
  batch, _, _, _ = x.shape
  _, out_h, out_w, _ = dy.shape
  rows, images = tile or tile_sizes(batch, out_h, out_w)
  # [Cin, Hp, W, B]: rows padded here, columns by the conv.
  xt = jnp.pad(x.transpose(3, 1, 2, 0), ((0, 0), (top, bottom), (0, 0), (0, 0)))
  halo = xt.shape[1] - out_h  # kernel height - 1
  dt = dy.transpose(1, 2, 0, 3)  # [Ho, Wo, B, Cout]
  total = None
  for i in range(0, out_h, rows):
    r = min(rows, out_h - i)
    for j in range(0, batch, images):
      m = min(images, batch - j)
      part = jax.lax.conv_general_dilated(
          xt[:, i:i + r + halo, :, j:j + m], dt[i:i + r, :, j:j + m], (1, 1),
          ((0, 0), (left, right)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
          precision=precision)
      total = part if total is None else total + part
  return total.transpose(1, 2, 0, 3)


def _tiled(tile=None):
  return lambda x, dy, padding: weight_grad_tiled(x, dy, padding, tile)


FORMULATIONS = {
    'baseline': f_baseline,
    'xla_vjp': f_xla_vjp,
    'batch2': _batch_chunks(2),
    'batch4': _batch_chunks(4),
    'bands2': _bands(2),
    'bands4': _bands(4),
    'dn_chwn': f_dn_chwn,
    'dn_hwnc': f_dn_hwnc,
    'flat9': f_flat9,
    'flat_x3': f_flat_x3,
    'flat_x3d3': f_flat_x3d3,
    'flat_x3d3_t': f_flat_x3d3_t,
    'flat_x3d3_k2': f_flat_x3d3_k2,
    'flat_x3d3_nn': f_flat_x3d3_nn,
    'flat_img_nn': f_flat_img_nn,
    'patches_h': f_patches_h,
    'tiled': _tiled(),
    'tile8x4': _tiled((8, 4)),
    'tile16x4': _tiled((16, 4)),
    'tile4x8': _tiled((4, 8)),
    'tile8x8': _tiled((8, 8)),
}


# --------------------------------------------------------------------- timing

def _shape(spec):
  b, h, w, c = (int(v) for v in spec.split('x'))
  return b, h, w, c


def _gflop(b, h, w, cin, cout=COUT):
  return 2.0 * b * h * w * KH * KW * cin * cout / 1e9


def _build(name, mode, steps, devices=1):
  """jit (devices == 1) or jit(shard_map) over `devices` host devices.

  With devices > 1 the arguments are batch-sharded (see `_shard`), each device
  computes the weight gradient of its share of the batch (the data-parallel
  trainer's setting, one XLA CPU device per core) and the results are summed
  with lax.psum.
  """
  jax, jnp = _jax()
  fn = FORMULATIONS[name]
  if mode == 'top':
    one = lambda x, dy: fn(x, dy, PAD)
  else:
    def one(xs, dys):
      def body(acc, xd):
        return acc + fn(xd[0], xd[1], PAD), None
      acc0 = jnp.zeros((KH, KW, xs.shape[-1], dys.shape[-1]), xs.dtype)
      if devices > 1:  # the carry must vary over the mesh axis like the body
        acc0 = acc0 + 0 * xs[0, 0, 0, 0, 0]
      return jax.lax.scan(body, acc0, (xs, dys))[0]
  if devices == 1:
    return jax.jit(one)
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  spec = P('d') if mode == 'top' else P(None, 'd')
  return jax.jit(jax.shard_map(
      lambda a, b: jax.lax.psum(one(a, b), 'd'), mesh=_mesh(devices),
      in_specs=(spec, spec), out_specs=P()))


def _mesh(devices):
  jax, _ = _jax()
  return jax.sharding.Mesh(np.array(jax.devices()[:devices]), ('d',))


def _shard(a, devices, batch_axis):
  """Places `a` split along its batch axis over `devices` devices."""
  jax, _ = _jax()
  if devices == 1:
    return a
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  spec = P(*([None] * batch_axis + ['d']))
  return jax.device_put(a, NamedSharding(_mesh(devices), spec))


def _exact(x, dy):
  """float64 dW on the host (numpy), PAD padding."""
  (top, bottom), (left, right) = PAD
  _, ho, wo, cout = dy.shape
  xp = np.pad(x.astype(np.float64), ((0, 0), (top, bottom), (left, right),
                                     (0, 0)))
  d = dy.astype(np.float64).reshape(-1, cout)
  return np.stack([np.stack([
      xp[:, ky:ky + ho, kx:kx + wo].reshape(-1, x.shape[3]).T @ d
      for kx in range(KW)]) for ky in range(KH)])


def measure(names, shapes, modes, repeats, warmup, steps, log,
            slow_factor=20.0, devices=1):
  """Yields result dicts (one per formulation, shape, mode).

  A formulation whose probe run takes over `slow_factor` times the fastest
  probe is timed once (runs=1) instead of joining the round-robin.
  """
  jax, jnp = _jax()
  rng = np.random.default_rng(0)
  for spec in shapes:
    b, h, w, cin = _shape(spec)
    xs = jnp.asarray(rng.standard_normal((steps, b, h, w, cin),
                                         dtype=np.float32))
    dys = jnp.asarray(rng.standard_normal((steps, b, h, w, COUT),
                                          dtype=np.float32))
    # Reference: jax.vjp of the conv at top level, per step.
    ref_fn = jax.jit(lambda x, dy: f_xla_vjp(x, dy, PAD))
    refs = [np.asarray(ref_fn(xs[i], dys[i])) for i in range(steps)]
    ref_sum = np.sum(refs, axis=0)
    exact = [_exact(np.asarray(xs[i]), np.asarray(dys[i])) for i in range(steps)]
    exact_sum = np.sum(exact, axis=0)
    flop = _gflop(b, h, w, cin)
    per = {'top': 1, 'scan': steps}
    sharded = {'top': (_shard(xs[0], devices, 0), _shard(dys[0], devices, 0)),
               'scan': (_shard(xs, devices, 1), _shard(dys, devices, 1))}
    for mode in modes:
      runners, errors, compile_s, probe = {}, {}, {}, {}
      for name in names:
        t0 = time.perf_counter()
        try:
          f = _build(name, mode, steps, devices)
          args = sharded[mode]
          out = np.asarray(jax.block_until_ready(f(*args)))
        except Exception as e:  # pylint: disable=broad-except
          log(f'  {name} {spec} {mode}: FAILED {type(e).__name__}: {e}'[:300])
          continue
        compile_s[name] = time.perf_counter() - t0
        ref = refs[0] if mode == 'top' else ref_sum
        ex = exact[0] if mode == 'top' else exact_sum
        errors[name] = (float(np.max(np.abs(out - ref)) / np.max(np.abs(ref))),
                        float(np.max(np.abs(out - ex)) / np.max(np.abs(ex))))
        runners[name] = (lambda f=f, args=args:
                         jax.block_until_ready(f(*args)))
        t0 = time.perf_counter()
        runners[name]()
        probe[name] = time.perf_counter() - t0
      fastest = min(probe.values(), default=0.0)
      slow = {n for n, t in probe.items() if t > slow_factor * fastest}
      fast = [n for n in runners if n not in slow]
      if not runners:
        continue
      for _ in range(warmup):
        for name in fast:
          runners[name]()
      times = {name: [] for name in fast}
      load = []
      for k in range(repeats):  # round-robin, starting one later each time
        load.append(os.getloadavg()[0])
        for name in fast[k % len(fast):] + fast[:k % len(fast)]:
          t0 = time.perf_counter()
          runners[name]()
          times[name].append(time.perf_counter() - t0)
      for name in slow:
        times[name] = [probe[name]]
      for name in runners:
        t = times[name]
        ms = statistics.median(t) * 1e3 / per[mode]
        yield dict(formulation=name, shape=spec, mode=mode, ms=ms,
                   gflops=flop / ms * 1e3, rel_err=errors[name][0],
                   err_f64=errors[name][1], compile_s=compile_s[name],
                   runs=len(t),
                   load=statistics.mean(load) if load else os.getloadavg()[0],
                   spread=(max(t) - min(t)) / statistics.median(t))


def measure_torch(shapes, repeats, warmup, threads_list, log):
  """PyTorch's weight gradient at top level; rows like `measure`'s.

  Runs in its own process (`--torch_worker`): with XLA's thread pool in the
  same process, torch's OpenMP threads slowed down several-fold.
  """
  import torch  # pylint: disable=g-import-not-at-top
  jax, _ = _jax()
  rng = np.random.default_rng(0)
  for spec in shapes:
    b, h, w, cin = _shape(spec)
    x_np = rng.standard_normal((b, h, w, cin), dtype=np.float32)
    dy_np = rng.standard_normal((b, h, w, COUT), dtype=np.float32)
    ref = np.asarray(jax.jit(lambda x, dy: f_xla_vjp(x, dy, PAD))(x_np, dy_np))
    x = torch.from_numpy(np.ascontiguousarray(x_np.transpose(0, 3, 1, 2)))
    dy = torch.from_numpy(np.ascontiguousarray(dy_np.transpose(0, 3, 1, 2)))
    wshape = (COUT, cin, KH, KW)

    def run():
      with torch.no_grad():
        g = torch.nn.grad.conv2d_weight(x, wshape, dy, stride=1, padding=1)
      return g.numpy().transpose(2, 3, 1, 0)  # OIHW -> HWIO
    out = run()
    err = float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))
    ex = _exact(x_np, dy_np)
    err64 = float(np.max(np.abs(out - ex)) / np.max(np.abs(ex)))
    times = {n: [] for n in threads_list}
    for _ in range(warmup):
      for n in threads_list:
        torch.set_num_threads(n)
        run()
    load = []
    for _ in range(repeats):  # round-robin over thread counts
      load.append(os.getloadavg()[0])
      for n in threads_list:
        torch.set_num_threads(n)
        t0 = time.perf_counter()
        run()
        times[n].append(time.perf_counter() - t0)
    for n in threads_list:
      t = times[n]
      ms = statistics.median(t) * 1e3
      yield dict(formulation=f'torch_{n}thr', shape=spec, mode='top', ms=ms,
                 gflops=_gflop(b, h, w, cin) / ms * 1e3, rel_err=err,
                 err_f64=err64,
                 compile_s=0.0, runs=len(t), load=statistics.mean(load),
                 spread=(max(t) - min(t)) / statistics.median(t))


def _child(extra_args, xla_flags, log):
  """Runs this script with --worker/--torch_worker; returns its rows."""
  cmd = [sys.executable, os.path.abspath(__file__), *extra_args]
  env = dict(os.environ)
  if xla_flags is not None:
    env['XLA_FLAGS'] = xla_flags
  try:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          timeout=900)
  except subprocess.TimeoutExpired:
    log(f'child {extra_args} timed out')
    return [], 'timed out'
  rows = [json.loads(line[4:]) for line in proc.stdout.splitlines()
          if line.startswith('ROW ')]
  err = ''
  if proc.returncode != 0 or not rows:
    err = (f'rc {proc.returncode}: ' +
           ((proc.stderr.strip().splitlines() or [''])[-1])[:300])
  return rows, err


# ---------------------------------------------------------------------- output

def _table(rows, title, baseline_ms):
  lines = [title,
           f'{"formulation":<14} {"shape":<12} {"mode":<5} {"ms":>9} '
           f'{"GFLOP/s":>8} {"vs base":>8} {"rel err":>8} {"err f64":>8} '
           f'{"runs":>4} '
           f'{"spread":>6} {"compile s":>9} {"load":>5}']
  for r in rows:
    base = baseline_ms.get((r['shape'], r['mode']))
    speed = f'{base / r["ms"]:.2f}x' if base else '-'
    lines.append(
        f'{r["formulation"]:<14} {r["shape"]:<12} {r["mode"]:<5} '
        f'{r["ms"]:9.3f} {r["gflops"]:8.1f} {speed:>8} {r["rel_err"]:8.1e} '
        f'{r["err_f64"]:8.1e} '
        f'{r["runs"]:4d} {r["spread"]:6.2f} {r["compile_s"]:9.2f} '
        f'{r["load"]:5.2f}')
  return '\n'.join(lines)


def _sorted(rows, shapes, names):
  order = {n: i for i, n in enumerate(names)}
  return sorted(rows, key=lambda r: (r['mode'] != 'top',
                                     shapes.index(r['shape']),
                                     order.get(r['formulation'], len(order)),
                                     r['formulation']))


def _baselines(rows):
  return {(r['shape'], r['mode']): r['ms'] for r in rows
          if r['formulation'] == 'baseline'}


def main(argv=None):
  args = parse_args(argv)
  names = [n for n in args.formulations.split(',') if n]
  for n in names:
    if n not in FORMULATIONS:
      raise SystemExit(f'unknown formulation {n!r}; known: {list(FORMULATIONS)}')
  shapes = [s for s in args.shapes.split(',') if s]
  modes = [m for m in args.modes.split(',') if m]
  log = (lambda s: print(s, file=sys.stderr, flush=True))

  if args.worker:
    for row in measure(names, shapes, modes, args.repeats, args.warmup,
                       args.scan_steps, log, devices=args.devices):
      print('ROW ' + json.dumps(row), flush=True)
    return
  if args.torch_worker:
    for row in measure_torch(shapes, args.repeats, args.warmup, [2, 1], log):
      print('ROW ' + json.dumps(row), flush=True)
    return

  import jax  # pylint: disable=g-import-not-at-top
  print(f'jax {jax.__version__}, {os.cpu_count()} CPUs, '
        f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}, '
        f'load average at start {os.getloadavg()}', flush=True)
  print(f'command: {" ".join(["python", *sys.argv])}', flush=True)
  t_start = time.time()
  rows = []
  for row in measure(names, shapes, modes, args.repeats, args.warmup,
                     args.scan_steps, log):
    rows.append(row)
    log(f'  {row["formulation"]:<14} {row["shape"]:<12} {row["mode"]:<5} '
        f'{row["ms"]:9.3f} ms {row["gflops"]:6.1f} GFLOP/s '
        f'err {row["rel_err"]:.1e}')
  if not args.no_torch and 'top' in modes:
    trows, err = _child(['--torch_worker', '--shapes', ','.join(shapes),
                         '--repeats', str(args.repeats),
                         '--warmup', str(args.warmup)], None, log)
    if err:
      print(f'torch child failed: {err}')
    rows += trows
  print()
  print(_table(_sorted(rows, shapes, names),
               f'Weight gradient dW[3,3,Cin,{COUT}], default XLA flags; median '
               f'of {args.repeats} round-robin runs (runs=1: too slow, probe '
               f'only); scan = per step of a {args.scan_steps}-step lax.scan; '
               'rel err = max|dW - vjp| / max|vjp|; err f64: the same against '
               'float64 numpy; spread = (max-min)/median; '
               'torch_N: torch.nn.grad.conv2d_weight, N threads, separate '
               'process', _baselines(rows)))

  if args.host_devices > 1:
    dnames = [n for n in args.device_formulations.split(',') if n]
    flags = (os.environ.get('XLA_FLAGS', '') +
             f' --xla_force_host_platform_device_count={args.host_devices}')
    drows, err = _child(
        ['--worker', '--devices', str(args.host_devices),
         '--formulations', ','.join(dnames), '--shapes', ','.join(shapes),
         '--modes', args.modes, '--repeats', str(args.repeats),
         '--warmup', str(args.warmup), '--scan_steps', str(args.scan_steps)],
        flags.strip(), log)
    print()
    if err:
      print(f'{args.host_devices} host devices: child failed ({err})')
    if drows:
      print(_table(_sorted(drows, shapes, dnames),
                   f'shard_map over {args.host_devices} XLA CPU devices '
                   f'(XLA_FLAGS={flags.strip()}), each on 1/'
                   f'{args.host_devices} of the batch, results psum-ed; shape '
                   'and GFLOP/s are for the whole batch', _baselines(drows)))

  flag_sets = args.xla_flag_sets.split(';') if args.xla_flag_sets else []
  for flags in flag_sets:
    fnames = [n for n in FLAG_FORMULATIONS if n in FORMULATIONS]
    frows, err = _child(
        ['--worker', '--formulations', ','.join(fnames),
         '--shapes', args.flag_shapes, '--modes', args.modes,
         '--repeats', str(args.repeats), '--warmup', str(args.warmup),
         '--scan_steps', str(args.scan_steps)], flags, log)
    print()
    if err:
      print(f'XLA_FLAGS={flags}: child failed ({err})')
    if frows:
      print(_table(_sorted(frows, args.flag_shapes.split(','), fnames),
                   f'XLA_FLAGS={flags} (child process; vs base = vs the '
                   'baseline in that process)', _baselines(frows)))
  print(f'\ntotal {time.time() - t_start:.0f} s, load average at end '
        f'{os.getloadavg()}')


if __name__ == '__main__':
  main()
