"""Train the tiny Whisper on eSpeak NG speech: ``python -m explorer.train.speech [--steps N] [--seed 0] [--out DIR]``.

Deterministic on CPU (fixed seeds, one thread, ``torch.use_deterministic_algorithms``). The training set is
``--utterances`` sentences of :data:`explorer.data.speech.WORDS` spoken by the training voices
(:data:`explorer.data.speech.TRAIN_VARIANTS` x accents), synthesised once at the start
(``make_utterances(n, "train", seed)``); batch ``step`` draws its utterances with ``torch.Generator(seed + step)``.
The loss is the decoder's cross-entropy plus ``--ctc-weight`` times a CTC loss on the encoder output (joint
CTC-attention training, Kim, Hori and Watanabe 2017, https://arxiv.org/abs/1609.06773): on two CPU cores it makes
the encoder's frames phonetic early, so the decoder learns in minutes what it would otherwise need hours for.
Whisper itself trains without it; the CTC head is not used at inference and nothing supervises the cross-attention.

Writes ``weights.safetensors``, ``model_card.json`` and ``MODEL_CARD.md`` into ``--out`` (default
``assets/speech``) and regenerates ``mel_filters.npz`` there from ``transformers`` (``--mel-filters-only`` does only
that). MODEL_CARD.md is rendered from the card by :func:`explorer.models.speech_card.render_model_card`; the
alignment study (``python -m explorer.analysis.speech_study``) adds the word-timing results to both.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from explorer.analysis.speech_metrics import word_error_rate
from explorer.data import speech as S
from explorer.models.speech import (
    EOT, PAD, SpeechConfig, TinyWhisper, batch_mel, batch_tokens, config_dict,
    default_speech_dir,
)
from explorer.models.shipped import save_weights, write_card
from explorer.models.speech_card import render_model_card

__all__ = ["train", "evaluate_wer", "write_mel_filters", "main", "BATCH", "TEST_SEED"]

BATCH = 24
TEST_SEED = 1      # make_utterances(..., "test", TEST_SEED): the held-out voices' sentences
TEST_UTTERANCES = 240


def write_mel_filters(folder: Path) -> Path:
    """Save Whisper's 80 mel filters (``transformers.audio_utils.mel_filter_bank``, Slaney) as ``mel_filters.npz``."""
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(num_frequency_bins=S.N_FFT // 2 + 1, num_mel_filters=S.N_MELS, min_frequency=0.0,
                           max_frequency=S.SAMPLE_RATE / 2, sampling_rate=S.SAMPLE_RATE, norm="slaney",
                           mel_scale="slaney")  # (freq, mel)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mel_filters.npz"
    np.savez_compressed(path, mel_80=bank.T.astype(np.float32))
    return path


def features(utterances: list[S.Utterance]) -> list[torch.Tensor]:
    """Log-mel ``[80, frame]`` of each utterance."""
    return [S.log_mel(u.audio) for u in utterances]


def train(utterances: list[S.Utterance], steps: int, seed: int = 0, lr: float = 2e-3, ctc_weight: float = 0.3,
          config: SpeechConfig | None = None, progress: bool = True) -> tuple[TinyWhisper, list[float]]:
    """Train a fresh model with AdamW (linear warm-up, cosine decay); returns it in eval mode and the loss curve."""
    torch.manual_seed(seed)
    model = TinyWhisper(config)
    mels = features(utterances)
    texts = [u.text for u in utterances]
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + float(np.cos(np.pi * s / steps))))
    model.train()
    curve, running = [], None
    bar = tqdm(range(steps), desc="train speech", disable=not progress)
    for step in bar:
        pick = torch.randint(len(mels), (BATCH,), generator=torch.Generator().manual_seed(seed * 10**7 + step))
        mel, lengths = batch_mel([mels[i] for i in pick])
        inputs, targets = batch_tokens([texts[i] for i in pick], model.config.max_text)
        audio, padding = model.encode(mel, lengths)
        logits = model.decode(inputs, audio, padding)  # (batch, token, vocab)
        loss = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=PAD)
        if ctc_weight > 0 and model.ctc_head is not None:
            log_probs = model.ctc_head(audio).log_softmax(-1).transpose(0, 1)  # (frame, batch, vocab)
            enc_lengths = (lengths - 1) // 2 + 1
            labels = targets.masked_fill(targets == EOT, PAD)
            label_lengths = (labels != PAD).sum(1)
            ctc = F.ctc_loss(log_probs, labels, enc_lengths, label_lengths, blank=PAD, zero_infinity=True)
            loss = loss + ctc_weight * ctc
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 50 == 0:
            curve.append(round(running, 4))
            bar.set_postfix(loss=f"{running:.3f}")
    return model.eval(), curve


@torch.no_grad()
def evaluate_wer(model: TinyWhisper, utterances: list[S.Utterance], chunk: int = 48) -> dict:
    """Greedy transcripts of ``utterances``: corpus WER overall and per voice, and character error rate."""
    refs, hyps, voices = [], [], []
    for start in range(0, len(utterances), chunk):
        part = utterances[start:start + chunk]
        mel, lengths = batch_mel(features(part))
        hyps += model.transcribe(mel, lengths)
        refs += [u.text for u in part]
        voices += [u.voice for u in part]
    per_voice = {v: word_error_rate([r for r, x in zip(refs, voices) if x == v],
                                    [h for h, x in zip(hyps, voices) if x == v]) for v in dict.fromkeys(voices)}
    cer = word_error_rate([" ".join(r) for r in refs], [" ".join(h) for h in hyps])
    exact = float(np.mean([r == h for r, h in zip(refs, hyps)]))
    return {"wer": word_error_rate(refs, hyps), "cer": cer, "exact": exact, "wer_by_voice": per_voice,
            "hypotheses": hyps}


def _test_results(model: TinyWhisper, n: int = TEST_UTTERANCES) -> dict:
    test = evaluate_wer(model, S.make_utterances(n, "test", TEST_SEED))
    test["utterances"] = n
    return test


def _reevaluate(folder: Path) -> dict:
    from explorer.models.speech import load_speech

    torch.set_num_threads(1)
    model, card = load_speech(folder)
    card["test"] = _test_results(model)
    print(f"held-out WER {card['test']['wer']:.3f}, CER {card['test']['cer']:.3f}")
    write_card(folder, card, render_model_card(card))
    return card


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2400, help="optimisation steps (batch %d)" % BATCH)
    parser.add_argument("--utterances", type=int, default=8000, help="training utterances synthesised")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the training data")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate")
    parser.add_argument("--ctc-weight", type=float, default=0.3, help="weight of the encoder CTC loss (0 = off)")
    parser.add_argument("--test-utterances", type=int, default=TEST_UTTERANCES,
                        help="held-out utterances for the word error rate")
    parser.add_argument("--heads", type=int, default=SpeechConfig.heads, help="attention heads in every layer")
    parser.add_argument("--out", type=Path, default=default_speech_dir(), help="output folder")
    parser.add_argument("--mel-filters-only", action="store_true", help="only regenerate mel_filters.npz")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="re-evaluate the weights in --out on the held-out voices and rewrite the card's test part")
    args = parser.parse_args(argv)
    if args.mel_filters_only:
        print(write_mel_filters(args.out))
        return {}
    if args.evaluate_only:
        return _reevaluate(args.out)
    if min(args.steps, args.utterances, args.test_utterances) < 1:
        parser.error("--steps, --utterances and --test-utterances must be >= 1")

    # one thread: with two, OpenMP's spin-waiting slows a run several-fold whenever anything else wants a core
    threads = 1
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    write_mel_filters(args.out)
    config = SpeechConfig(heads=args.heads)
    start = time.perf_counter()
    data = S.make_utterances(args.utterances, "train", args.seed)
    data_seconds = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    model, curve = train(data, args.steps, seed=args.seed, lr=args.lr, ctc_weight=args.ctc_weight, config=config)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    test = _test_results(model, args.test_utterances)
    print(f"held-out WER {test['wer']:.3f}, CER {test['cer']:.3f}; trained in {seconds:.0f} s")

    args.out.mkdir(parents=True, exist_ok=True)
    save_weights(args.out, model)
    card = {
        "espeak_version": S.espeak_version(),
        "words": len(S.WORDS),
        "seed": args.seed,
        "steps": args.steps,
        "batch": BATCH,
        "lr": args.lr,
        "ctc_weight": args.ctc_weight,
        "threads": threads,
        "command": f"python -m explorer.train.speech --steps {args.steps} --utterances {args.utterances} "
                   f"--seed {args.seed} --heads {args.heads}",
        "train_utterances": args.utterances,
        "train_voices": list(S.voices("train")),
        "validation_voices": list(S.voices("validation")),
        "test_voices": list(S.voices("test")),
        "rate_range": [140, 210], "pitch_range": [30, 70], "snr_range": [20.0, 40.0],
        "data_seconds": round(data_seconds, 1),
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "loss_curve": curve,
        "test_seed": TEST_SEED,
        "test": test,
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch_version": torch.__version__,
        "config": config_dict(config),
    }
    write_card(args.out, card, render_model_card(card))
    return card


if __name__ == "__main__":
    main()
