"""Which half of a quantized Whisper carries its damage? Write a whisper.cpp ``.bin`` whose ``encoder.*`` tensors come
from one file and ``decoder.*`` tensors from another, then decode it like any other file.

Both inputs must be the same model quantized onto the same weight type (same hyperparameters, vocabulary, mel filters,
tensor names, types and shapes), e.g. tarq's default and whisper.cpp's RTN of base at Q4_0: a file with the
calibrated encoder and the RTN decoder, and the reverse, tell whether a calibrated file's loss on some set comes from
the encoder's statistics (the audio) or the decoder's (the text). A diagnostic, not a product path: it combines files
tarq already wrote, bit for bit, and whisper.cpp reads the result because nothing about any tensor changes.

    python benchmarks/splice_halves.py --encoder base_def.bin --decoder base_rtn.bin --out enc_def_dec_rtn.bin
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from tarq.export.whisper_cpp import WhisperModelFile, read_whisper_cpp, validate_for_whisper_cpp, write_whisper_bin


def _mismatch(enc: WhisperModelFile, dec: WhisperModelFile) -> str | None:
    """The first way the two files are not the same model on the same type, or None. Each tensor's type and shape
    follow from the (equal) hyperparameters, which main checks each input against (validate_for_whisper_cpp)."""
    if enc.hparams != dec.hparams:
        diff = [f.name for f in dataclasses.fields(enc.hparams)
                if getattr(enc.hparams, f.name) != getattr(dec.hparams, f.name)]
        return f"hyperparameters differ ({', '.join(diff)})"
    if enc.vocab != dec.vocab:
        return "vocabularies differ"
    if not np.array_equal(enc.mel_filters, dec.mel_filters):
        return "mel filters differ"
    if list(enc.tensors) != list(dec.tensors):
        return "tensor names differ"
    return None


def splice(encoder_file: WhisperModelFile, decoder_file: WhisperModelFile) -> WhisperModelFile:
    """``encoder_file`` with every ``decoder.*`` tensor replaced by ``decoder_file``'s (file order kept)."""
    problem = _mismatch(encoder_file, decoder_file)
    if problem:
        raise ValueError(problem)
    tensors = {name: decoder_file.tensors[name] if name.startswith("decoder.") else t
               for name, t in encoder_file.tensors.items()}
    return dataclasses.replace(encoder_file, tensors=tensors)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", type=Path, required=True, help="whisper.cpp .bin giving every encoder.* tensor")
    ap.add_argument("--decoder", type=Path, required=True, help="whisper.cpp .bin giving every decoder.* tensor")
    ap.add_argument("--out", type=Path, required=True, help="the spliced .bin (written atomically)")
    args = ap.parse_args(argv)
    try:
        enc, dec = read_whisper_cpp(args.encoder), read_whisper_cpp(args.decoder)
        for path, mf in ((args.encoder, enc), (args.decoder, dec)):
            validate_for_whisper_cpp(mf, where=str(path))
        try:
            spliced = splice(enc, dec)
        except ValueError as e:
            raise ValueError(f"{args.encoder} and {args.decoder}: not the same model on the same type: {e}") from None
        write_whisper_bin(args.out, spliced)
    except (OSError, ValueError) as e:
        print(f"splice_halves: error: {e}", file=sys.stderr)
        return 2
    n_dec = sum(name.startswith("decoder.") for name in spliced.tensors)
    print(f"wrote {args.out}: {len(spliced.tensors) - n_dec} tensors from {args.encoder}, {n_dec} from {args.decoder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
