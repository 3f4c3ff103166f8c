"""2-D discrete Fourier transform as fixed real matmuls (tract has no ONNX DFT op).

For an ``h x w`` grid the 2-D DFT is ``F = A_h X A_w^T`` with ``A_n[j, k] = exp(-2 pi i jk/n)``.
On row-major flattened tokens (``N = h*w``) it is one matrix, ``K = kron(A_h, A_w)``; we keep
its real and imaginary parts ``Kr = Re K`` and ``Ki = Im K`` as float constants. For a real
input ``x`` (``[..., N, C]``):

    Re F = Kr @ x,  Im F = Ki @ x
    x' = Re(K^H G) / N = (Kr @ Re G + Ki @ Im G) / N        (inverse, real part)

which is exact (up to float rounding) for a fixed grid.
"""

from __future__ import annotations

import math

import torch


def dft_matrix(n: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of the ``n``-point DFT matrix ``exp(-2 pi i jk / n)``."""
    j = torch.arange(n, dtype=torch.float64)
    ang = -2.0 * math.pi * torch.outer(j, j) / n
    return torch.cos(ang).to(dtype), torch.sin(ang).to(dtype)


def dft2_matrices(h: int, w: int, dtype: torch.dtype = torch.float32):
    """``(Kr, Ki)`` of shape ``[h*w, h*w]`` for row-major flattened ``h x w`` grids."""
    ar, ai = dft_matrix(h)
    br, bi = dft_matrix(w)
    a = torch.complex(ar, ai)
    b = torch.complex(br, bi)
    k = torch.kron(a, b)
    return k.real.to(dtype).contiguous(), k.imag.to(dtype).contiguous()


def dft2(xr: torch.Tensor, xi: torch.Tensor | None = None):
    """2-D DFT over the last two dims of a (complex given as re/im) tensor, by matmuls.
    Equals ``torch.fft.fft2``."""
    h, w = xr.shape[-2:]
    ar, ai = (m.to(xr.dtype) for m in dft_matrix(h))
    br, bi = (m.to(xr.dtype) for m in dft_matrix(w))
    if xi is None:
        xi = torch.zeros_like(xr)
    # rows: A_h @ X
    yr = ar @ xr - ai @ xi
    yi = ar @ xi + ai @ xr
    # cols: Y @ A_w^T (A_w symmetric)
    zr = yr @ br - yi @ bi
    zi = yr @ bi + yi @ br
    return zr, zi


def idft2(xr: torch.Tensor, xi: torch.Tensor):
    """Inverse 2-D DFT by matmuls. Equals ``torch.fft.ifft2``."""
    h, w = xr.shape[-2:]
    # conj(A) = Ar - i Ai
    ar, ai = (m.to(xr.dtype) for m in dft_matrix(h))
    br, bi = (m.to(xr.dtype) for m in dft_matrix(w))
    ai, bi = -ai, -bi
    yr = ar @ xr - ai @ xi
    yi = ar @ xi + ai @ xr
    zr = yr @ br - yi @ bi
    zi = yr @ bi + yi @ br
    n = h * w
    return zr / n, zi / n


def tokens_dft2(x: torch.Tensor, kr: torch.Tensor, ki: torch.Tensor):
    """Forward DFT of real tokens ``x [..., N, C]`` (N = h*w, row-major) -> (Re, Im)."""
    return kr @ x, ki @ x


def tokens_idft2_real(gr: torch.Tensor, gi: torch.Tensor, kr: torch.Tensor, ki: torch.Tensor):
    """Real part of the inverse DFT of ``G = gr + i gi`` on flattened tokens."""
    n = kr.shape[0]
    return (kr @ gr + ki @ gi) / n
