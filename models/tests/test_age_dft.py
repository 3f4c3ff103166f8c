import torch

from agegate_models.dft import dft2, dft2_matrices, idft2, tokens_dft2, tokens_idft2_real


def test_dft2_matches_fft2_and_inverse():
    torch.manual_seed(0)
    for h, w in [(7, 7), (4, 4), (3, 5)]:
        x = torch.randn(2, 3, h, w, dtype=torch.float64)
        y = torch.randn(2, 3, h, w, dtype=torch.float64)
        ref = torch.fft.fft2(torch.complex(x, y))
        zr, zi = dft2(x, y)
        torch.testing.assert_close(zr, ref.real)
        torch.testing.assert_close(zi, ref.imag)
        inv = torch.fft.ifft2(torch.complex(x, y))
        ir, ii = idft2(x, y)
        torch.testing.assert_close(ir, inv.real)
        torch.testing.assert_close(ii, inv.imag)


def test_token_form_matches_fft2_and_round_trips():
    torch.manual_seed(1)
    h = w = 7
    kr, ki = dft2_matrices(h, w, torch.float64)
    x = torch.randn(2, h * w, 5, dtype=torch.float64)  # [B,N,C] row-major tokens
    fr, fi = tokens_dft2(x, kr, ki)
    ref = torch.fft.fft2(x.transpose(1, 2).reshape(2, 5, h, w))
    torch.testing.assert_close(fr.transpose(1, 2).reshape(2, 5, h, w), ref.real)
    torch.testing.assert_close(fi.transpose(1, 2).reshape(2, 5, h, w), ref.imag)
    back = tokens_idft2_real(fr, fi, kr, ki)
    torch.testing.assert_close(back, x)
    # filtering = multiplying the spectrum, same as the torch.fft path
    wr, wi = torch.randn(h * w, 5, dtype=torch.float64), torch.randn(h * w, 5, dtype=torch.float64)
    gr, gi = fr * wr - fi * wi, fr * wi + fi * wr
    out = tokens_idft2_real(gr, gi, kr, ki)
    filt = torch.complex(wr, wi).transpose(0, 1).reshape(5, h, w)
    ref2 = torch.fft.ifft2(ref * filt).real
    torch.testing.assert_close(out.transpose(1, 2).reshape(2, 5, h, w), ref2)
