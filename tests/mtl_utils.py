"""Shared by the LLaMA-AES data tests: the ELLIPSE traits and codecs, and one scored
ELLIPSE essay written in memory."""

from aes_jax.data import ell, score_codec

ELL_TRAITS, ELL_CODECS = score_codec.ell_traits_and_codecs()


def ell_record(text="I think students should learn at home. It is good for them.",
               values=(2.5, 3.5, 3.0, 3.0, 1.5, 4.0)):
    return ell.EllEssay(text_id="E1", text=text, scores=dict(zip(ELL_TRAITS, values)),
                        source="fold_0.csv", line=2, fold=0)
