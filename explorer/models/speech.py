"""A tiny Whisper: log-mel frames -> conv front-end -> encoder; a character decoder that cross-attends to the frames.

Built from explorer layers, so every attention pattern and conv output is a named hook point. The shapes follow
Whisper (Radford et al. 2022, https://arxiv.org/abs/2212.04356) at a size that trains on two CPU cores::

    mel [batch, 80, frame]                                   10 ms per frame (explorer.data.speech.log_mel)
      -> conv1 (k3, s1, p1), GELU, conv2 (k3, s2, p1), GELU  [batch, embed, enc_frame]   20 ms per encoder frame
      -> + sinusoidal positions, encoder blocks (pre-norm self-attention + MLP), ln_post   audio [batch, enc, embed]
    tokens [batch, token] = <sot> c_1 .. c_n                 characters (TOKENS)
      -> token embedding + learned positions
      -> decoder blocks: x += self_attn(ln(x)) (causal); x += cross_attn(ln(x), audio); x += mlp(ln(x))
      -> ln, logits = x @ token_embedding.T                  tied output embedding

Hook points (``explorer.record(model, "decoder.*.cross_attn.hook_pattern")``):

=========================================  ======================================================
name                                       shape
=========================================  ======================================================
``conv1.hook_in/out``, ``conv2.hook_out``   ``[batch, channel, frame]`` (explorer Conv1d)
``hook_audio``                             ``[batch, enc_frame, embed]`` (encoder output)
``encoder.{i}.attn.hook_pattern``          ``[batch, head, enc_frame, enc_frame]``
``decoder.{i}.self_attn.hook_pattern``     ``[batch, head, token, token]``
``decoder.{i}.cross_attn.hook_pattern``    ``[batch, head, token, enc_frame]``
``decoder.{i}.hook_resid_out``             ``[batch, token, embed]``
=========================================  ======================================================

Weights: ``assets/speech/`` (trained by ``python -m explorer.train.speech``; see its MODEL_CARD.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import explorer
from explorer._checks import check_int, check_tensor, check_type
from explorer.hooks import HookPoint
from explorer.models.shipped import CARD_FILE, WEIGHTS_FILE, load_shipped
from explorer.layers import Conv1d, MultiheadAttention
from explorer.masks import causal

__all__ = ["SpeechConfig", "TinyWhisper", "TOKENS", "PAD", "SOT", "EOT", "encode_text", "decode_tokens",
           "encoder_frames", "load_speech", "default_speech_dir", "WEIGHTS_FILE", "CARD_FILE", "RETRAIN_COMMAND",
           "FRAME_SECONDS", "config_dict", "batch_mel", "batch_tokens", "sinusoids"]

PAD, SOT, EOT = 0, 1, 2
TOKENS = ("<pad>", "<sot>", "<eot>", " ") + tuple("abcdefghijklmnopqrstuvwxyz")
_INDEX = {c: i for i, c in enumerate(TOKENS) if len(c) == 1}
FRAME_SECONDS = 0.02  # one encoder frame: 10 ms mel hop x stride 2
RETRAIN_COMMAND = "python -m explorer.train.speech"


@dataclass(frozen=True)
class SpeechConfig:
    """Sizes of the model. The defaults are those of the shipped weights."""

    n_mels: int = 80
    embed: int = 64
    heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    vocab: int = len(TOKENS)
    max_frames: int = 400      # encoder frames (8 s of audio)
    max_tokens: int = 96       # decoder positions, <sot> included
    ctc: bool = True           # a CTC head on the encoder (training aid, see explorer.train.speech)

    def __post_init__(self) -> None:
        for name, low, high in (("n_mels", 1, 512), ("embed", 4, 1024), ("heads", 1, 64), ("encoder_layers", 1, 12),
                                ("decoder_layers", 1, 12), ("vocab", 4, 100_000), ("max_frames", 1, 100_000),
                                ("max_tokens", 2, 4096)):
            check_int(name, getattr(self, name), low, high)
        if self.embed % self.heads:
            raise ValueError(f"embed ({self.embed}) must be divisible by heads ({self.heads})")

    @property
    def max_text(self) -> int:
        """Longest text in characters the decoder can take (``max_tokens - 1``: <sot> comes first)."""
        return self.max_tokens - 1


def encode_text(text: str, max_text: int | None = None) -> list[int]:
    """Character ids of ``text`` (lower-cased, spaces collapsed), without <sot>/<eot>.

    Raises:
        TypeError: ``text`` is not a str. ValueError: empty, longer than ``max_text`` characters, or a character
        outside the vocabulary (a-z and space), naming the characters.
    """
    check_type("text", text, str, "a str")
    clean = " ".join(text.lower().split())
    if not clean:
        raise ValueError("text must contain at least one word, got an empty string")
    bad = sorted({c for c in clean if c not in _INDEX})
    if bad:
        raise ValueError(f"text has characters outside the model's vocabulary (a-z and space): {''.join(bad)!r}")
    if max_text is not None and len(clean) > max_text:
        raise ValueError(f"text is {len(clean)} characters long; the model's context takes at most {max_text}")
    return [_INDEX[c] for c in clean]


def decode_tokens(ids) -> str:
    """The text of character ids (special tokens dropped; stops at <eot>)."""
    out = []
    for i in ids:
        i = int(i)
        if i == EOT:
            break
        if i > EOT:
            out.append(TOKENS[i])
    return "".join(out)


def encoder_frames(mel_frames: int) -> int:
    """Encoder frames for ``mel_frames`` log-mel frames (conv k3, stride 2, padding 1: ``ceil(n / 2)``)."""
    check_int("mel_frames", mel_frames, 1)
    return (mel_frames - 1) // 2 + 1


def sinusoids(length: int, channels: int, max_timescale: float = 10_000.0) -> torch.Tensor:
    """Whisper's sinusoidal positions ``[length, channels]`` (sin in the first half, cos in the second)."""
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-increment * torch.arange(channels // 2, dtype=torch.float64))
    t = torch.arange(length, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cat([t.sin(), t.cos()], dim=1).to(torch.float32)


def _mlp(embed: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(embed, 4 * embed), nn.GELU(), nn.Linear(4 * embed, embed))


class EncoderBlock(nn.Module):
    """Pre-norm self-attention over audio frames, then an MLP."""

    def __init__(self, embed: int, heads: int) -> None:
        super().__init__()
        self.attn_ln = nn.LayerNorm(embed)
        self.attn = MultiheadAttention(embed, heads)
        self.mlp_ln = nn.LayerNorm(embed)
        self.mlp = _mlp(embed)
        self.hook_resid_out = HookPoint(("batch", "query", "embed"))

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x), key_padding_mask=padding)  # (batch, frame, embed)
        x = x + self.mlp(self.mlp_ln(x))
        return self.hook_resid_out(x)


class DecoderBlock(nn.Module):
    """Pre-norm causal self-attention, cross-attention to the audio frames, MLP."""

    def __init__(self, embed: int, heads: int) -> None:
        super().__init__()
        self.self_ln = nn.LayerNorm(embed)
        self.self_attn = MultiheadAttention(embed, heads, mask=causal())
        self.cross_ln = nn.LayerNorm(embed)
        self.cross_attn = MultiheadAttention(embed, heads)
        self.mlp_ln = nn.LayerNorm(embed)
        self.mlp = _mlp(embed)
        self.hook_resid_out = HookPoint(("batch", "query", "embed"))

    def forward(self, x: torch.Tensor, audio: torch.Tensor, audio_padding: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.self_ln(x))  # (batch, token, embed)
        x = x + self.cross_attn(self.cross_ln(x), audio, key_padding_mask=audio_padding)
        x = x + self.mlp(self.mlp_ln(x))
        return self.hook_resid_out(x)


class TinyWhisper(nn.Module):
    """Speech recogniser with Whisper's layout (see the module docstring).

    Args:
        config: a :class:`SpeechConfig` (default: the shipped model's sizes).
    """

    def __init__(self, config: SpeechConfig | None = None) -> None:
        super().__init__()
        config = SpeechConfig() if config is None else config
        check_type("config", config, SpeechConfig, "a SpeechConfig")
        self.config = config
        e = config.embed
        self.conv1 = Conv1d(config.n_mels, e, 3, padding=1)
        self.conv2 = Conv1d(e, e, 3, stride=2, padding=1)
        self.register_buffer("positions", sinusoids(config.max_frames, e), persistent=False)
        self.encoder = nn.ModuleList(EncoderBlock(e, config.heads) for _ in range(config.encoder_layers))
        self.ln_post = nn.LayerNorm(e)
        self.hook_audio = HookPoint(("batch", "key", "embed"))
        self.token_embed = nn.Embedding(config.vocab, e)
        self.token_pos = nn.Parameter(torch.randn(config.max_tokens, e) * 0.01)
        self.decoder = nn.ModuleList(DecoderBlock(e, config.heads) for _ in range(config.decoder_layers))
        self.ln = nn.LayerNorm(e)
        # CTC head on the encoder output (blank = PAD); only the training loss reads it
        self.ctc_head = nn.Linear(e, config.vocab) if config.ctc else None
        nn.init.normal_(self.token_embed.weight, std=0.02)

    def front_end(self) -> nn.Sequential:
        """The conv front-end as one module (shares parameters), for :func:`explorer.analysis.receptive_field`."""
        return nn.Sequential(self.conv1, nn.GELU(), self.conv2, nn.GELU())

    def encode(self, mel: torch.Tensor, mel_lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Audio frames ``[batch, enc_frame, embed]`` and their padding mask (True = padding) or None.

        Args:
            mel: ``[batch, n_mels, frame]`` log-mel (:func:`explorer.data.speech.log_mel`).
            mel_lengths: ``[batch]`` valid mel frames per item (the rest is padding), or None (all valid).
        """
        check_tensor("mel", mel, f"(batch, {self.config.n_mels}, frame)", dtype="float")
        if mel.ndim != 3 or mel.shape[1] != self.config.n_mels:
            raise ValueError(f"mel must have shape (batch, {self.config.n_mels}, frame), got {tuple(mel.shape)}")
        n_enc = encoder_frames(mel.shape[2])
        if n_enc > self.config.max_frames:
            raise ValueError(f"mel has {mel.shape[2]} frames ({n_enc} encoder frames); the model takes at most "
                             f"{self.config.max_frames} encoder frames ({self.config.max_frames * FRAME_SECONDS:.1f} s)")
        padding = valid = None
        if mel_lengths is not None:
            check_tensor("mel_lengths", mel_lengths, "(batch,)", dtype=torch.long)
            if mel_lengths.shape != mel.shape[:1] or bool((mel_lengths < 1).any() | (mel_lengths > mel.shape[2]).any()):
                raise ValueError(f"mel_lengths must be [batch] values in 1..{mel.shape[2]}")
            valid = (torch.arange(mel.shape[2], device=mel.device)[None, :] < mel_lengths[:, None])[:, None, :]
            enc_lengths = (mel_lengths - 1) // 2 + 1
            padding = torch.arange(n_enc, device=mel.device)[None, :] >= enc_lengths[:, None]  # (batch, enc_frame)
            mel = mel * valid  # padded frames read as the convs' own zero padding: a batch equals its items alone
        x = F.gelu(self.conv1(mel))  # (batch, embed, frame)
        if valid is not None:
            x = x * valid
        x = F.gelu(self.conv2(x))  # (batch, embed, enc_frame)
        x = x.transpose(1, 2) + self.positions[:n_enc]  # (batch, enc_frame, embed)
        for block in self.encoder:
            x = block(x, padding)
        return self.hook_audio(self.ln_post(x)), padding

    def decode(self, tokens: torch.Tensor, audio: torch.Tensor, audio_padding: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits ``[batch, token, vocab]`` for ``tokens`` ``[batch, token]`` (starting with <sot>)."""
        check_tensor("tokens", tokens, "(batch, token)", dtype=torch.long)
        if tokens.ndim != 2 or not 1 <= tokens.shape[1] <= self.config.max_tokens:
            raise ValueError(f"tokens must have shape (batch, 1..{self.config.max_tokens}), got {tuple(tokens.shape)}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.config.vocab):
            raise ValueError(f"tokens must be in [0, {self.config.vocab})")
        x = self.token_embed(tokens) + self.token_pos[: tokens.shape[1]]
        for block in self.decoder:
            x = block(x, audio, audio_padding)
        return self.ln(x) @ self.token_embed.weight.T

    def forward(self, mel: torch.Tensor, tokens: torch.Tensor, mel_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits ``[batch, token, vocab]``."""
        audio, padding = self.encode(mel, mel_lengths)
        return self.decode(tokens, audio, padding)

    @torch.no_grad()
    def transcribe(self, mel: torch.Tensor, mel_lengths: torch.Tensor | None = None, max_text: int | None = None) -> list[str]:
        """Greedy decoding of a batch; returns the texts."""
        audio, padding = self.encode(mel, mel_lengths)
        limit = self.config.max_text if max_text is None else min(max_text, self.config.max_text)
        tokens = torch.full((mel.shape[0], 1), SOT, dtype=torch.long, device=mel.device)
        done = torch.zeros(mel.shape[0], dtype=torch.bool, device=mel.device)
        for _ in range(limit):
            nxt = self.decode(tokens, audio, padding)[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, EOT), nxt)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            done |= nxt == EOT
            if bool(done.all()):
                break
        return [decode_tokens(row[1:]) for row in tokens.tolist()]


def default_speech_dir() -> Path:
    """``assets/speech`` of the repository (next to the ``explorer`` package)."""
    return Path(explorer.__file__).resolve().parents[1] / "assets" / "speech"


def config_dict(config: SpeechConfig) -> dict:
    """The config as a plain dict (for the model card)."""
    return asdict(config)


def load_speech(path: str | Path | None = None) -> tuple[TinyWhisper, dict]:
    """The trained model (eval mode) and its parsed model card.

    Raises:
        FileNotFoundError: a file is missing. ValueError: a file cannot be read or does not fit the config.
        Both name the file and the command that retrains it.
    """
    folder = default_speech_dir() if path is None else Path(path)
    return load_shipped(folder, SpeechConfig, TinyWhisper, RETRAIN_COMMAND)


def batch_mel(mels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad ``[80, frame]`` log-mels to one batch ``[batch, 80, max_frame]`` (zeros; :meth:`TinyWhisper.encode`
    ignores them given the lengths) and the lengths ``[batch]``."""
    lengths = torch.tensor([m.shape[1] for m in mels])
    out = torch.stack([F.pad(m, (0, int(lengths.max()) - m.shape[1])) for m in mels])
    return out, lengths


def batch_tokens(texts: list[str], max_text: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder inputs ``<sot> c..`` and targets ``c.. <eot>`` ``[batch, token]`` padded with PAD."""
    ids = [encode_text(t, max_text) for t in texts]
    n = max(len(i) for i in ids) + 1
    inputs = torch.full((len(ids), n), PAD, dtype=torch.long)
    targets = torch.full((len(ids), n), PAD, dtype=torch.long)
    for row, i in enumerate(ids):
        inputs[row, : len(i) + 1] = torch.tensor([SOT] + i)
        targets[row, : len(i) + 1] = torch.tensor(i + [EOT])
    return inputs, targets

