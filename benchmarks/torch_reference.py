"""PyTorch twins of minigen's models, the same-run baselines of the training benchmarks.

`GPT` is nanoGPT's model (pre-LayerNorm blocks, fused q/k/v projection, `scaled_dot_product_attention`
with is_causal, output head tied to the token embedding, GPT-2 initialisation), with the GELU in its
tanh form as minigen's default GPTConfig (GPT-2's gelu_new). `Seq2Seq` mirrors minigen.models.seq2seq with
its trainer's defaults: a bidirectional GRU encoder over packed sequences (the real tokens only), a tanh
bridge to the decoder's first state, a GRUCell decoder fed [embedding; previous context], Bahdanau
attention and one output projection of [state; context] over all steps.

Imported only by a benchmark worker on the torch side, so minigen never depends on torch.
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

MASKED_SCORE = -1e30  # the score minigen gives padded source positions (minigen.kernels.MASKED_SCORE)


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head, bias):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, n_embd, n_head, bias):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    """nanoGPT's GPT: `logits, loss = model(idx, targets)`."""

    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd, bias=False):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList([Block(n_embd, n_head, bias) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer))
            elif p.dim() == 2:
                nn.init.normal_(p, 0.0, 0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-100)


class Seq2Seq(nn.Module):
    """GRU encoder-decoder with Bahdanau attention: `logits = model(src, src_lengths, tgt_in)`."""

    def __init__(self, src_vocab_size, tgt_vocab_size, embedding_size=64, hidden_size=256, pad_id=0):
        super().__init__()
        self.src_embedding = nn.Embedding(src_vocab_size, embedding_size, padding_idx=pad_id)
        self.encoder = nn.GRU(embedding_size, hidden_size // 2, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(hidden_size, hidden_size)
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, embedding_size, padding_idx=pad_id)
        self.decoder = nn.GRUCell(embedding_size + hidden_size, hidden_size)
        self.W = nn.Linear(hidden_size, hidden_size, bias=False)
        self.U = nn.Linear(hidden_size, hidden_size)
        self.v = nn.Linear(hidden_size, 1, bias=False)
        self.out = nn.Linear(2 * hidden_size, tgt_vocab_size)

    def forward(self, src, src_lengths, tgt_in):
        B, S = src.shape
        packed = nn.utils.rnn.pack_padded_sequence(self.src_embedding(src), src_lengths, batch_first=True,
                                                   enforce_sorted=False)
        outputs, h_n = self.encoder(packed)
        outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True, total_length=S)
        h = torch.tanh(self.bridge(h_n.permute(1, 0, 2).reshape(B, -1)))
        mask = torch.arange(S)[None, :] >= src_lengths[:, None]
        keys = self.U(outputs)
        context = outputs.new_zeros(B, outputs.shape[2])
        features = []
        for t in range(tgt_in.shape[1]):
            h = self.decoder(torch.cat([self.tgt_embedding(tgt_in[:, t]), context], dim=-1), h)
            scores = self.v(torch.tanh(self.W(h).unsqueeze(1) + keys)).squeeze(-1).masked_fill(mask, MASKED_SCORE)
            weights = torch.softmax(scores, dim=-1).masked_fill(mask, 0.0)
            context = torch.bmm(weights.unsqueeze(1), outputs).squeeze(1)
            features.append(torch.cat([h, context], dim=-1))
        return self.out(torch.stack(features, dim=1))


def adamw_param_groups(model, weight_decay):
    """Decay on 2-D (and larger) weights only, as nanoGPT and minigen do."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
