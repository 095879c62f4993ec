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

    def encode(self, src, src_lengths):
        """(outputs (B, S, H), keys U(outputs), padding mask (B, S), the decoder's first state h (B, H))."""
        B, S = src.shape
        packed = nn.utils.rnn.pack_padded_sequence(self.src_embedding(src), src_lengths, batch_first=True,
                                                   enforce_sorted=False)
        outputs, h_n = self.encoder(packed)
        outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True, total_length=S)
        h = torch.tanh(self.bridge(h_n.permute(1, 0, 2).reshape(B, -1)))
        mask = torch.arange(S)[None, :] >= src_lengths[:, None]
        return outputs, self.U(outputs), mask, h

    def step(self, tokens, h, context, outputs, keys, mask):
        """One decoder step: the new state and context (input feeding of the previous context)."""
        h = self.decoder(torch.cat([self.tgt_embedding(tokens), context], dim=-1), h)
        scores = self.v(torch.tanh(self.W(h).unsqueeze(1) + keys)).squeeze(-1).masked_fill(mask, MASKED_SCORE)
        weights = torch.softmax(scores, dim=-1).masked_fill(mask, 0.0)
        return h, torch.bmm(weights.unsqueeze(1), outputs).squeeze(1)

    def forward(self, src, src_lengths, tgt_in):
        outputs, keys, mask, h = self.encode(src, src_lengths)
        context = outputs.new_zeros(outputs.shape[0], outputs.shape[2])
        features = []
        for t in range(tgt_in.shape[1]):
            h, context = self.step(tgt_in[:, t], h, context, outputs, keys, mask)
            features.append(torch.cat([h, context], dim=-1))
        return self.out(torch.stack(features, dim=1))

    @torch.no_grad()
    def greedy(self, src, src_lengths, bos_id, eos_id, pad_id, max_length):
        """Greedy decoding (B, <= max_length) from a bos column; finished rows are padded with pad_id."""
        outputs, keys, mask, h = self.encode(src, src_lengths)
        context = outputs.new_zeros(outputs.shape[0], outputs.shape[2])
        tokens = torch.full((src.shape[0],), bos_id, dtype=torch.long)
        sequences, unfinished = [tokens], torch.ones(src.shape[0], dtype=torch.bool)
        while len(sequences) < max_length and unfinished.any():
            h, context = self.step(tokens, h, context, outputs, keys, mask)
            tokens = self.out(torch.cat([h, context], dim=-1)).argmax(dim=-1)
            tokens = torch.where(unfinished, tokens, pad_id)
            unfinished &= tokens != eos_id
            sequences.append(tokens)
        return torch.stack(sequences, dim=1)

    @torch.no_grad()
    def beam_search(self, src, src_lengths, num_beams, bos_id, eos_id, pad_id, max_length):
        """Batched beam search with Hugging Face's rules (length_penalty 1, early_stopping False), as minigen's
        generate: each step ranks the beams * V continuations of a row and keeps the best 2 * beams; the best
        beams that do not end go on, those among the top beams that end join the row's finished hypotheses
        (best beams kept, scored by sum of log-probabilities / generated length); a row stops taking them
        once its best running beam cannot beat the worst kept. Returns the best hypothesis of each row."""
        B, K = src.shape[0], num_beams
        outputs, keys, mask, h = self.encode(src, src_lengths)
        flat = torch.arange(B).repeat_interleave(K)
        outputs, keys, mask, h = outputs[flat], keys[flat], mask[flat], h[flat]
        context = outputs.new_zeros(B * K, outputs.shape[2])
        row = torch.arange(B)[:, None]
        running = torch.full((B, K, max_length), pad_id, dtype=torch.long)
        running[:, :, 0] = bos_id
        running_scores = torch.full((B, K), -math.inf, dtype=torch.float64)
        running_scores[:, 0] = 0.0
        finished = running.clone()
        finished_scores = torch.full((B, K), -math.inf, dtype=torch.float64)
        finished_length = torch.ones((B, K), dtype=torch.long)
        can_improve = torch.ones(B, dtype=torch.bool)
        for cur in range(1, max_length):
            h, context = self.step(running[:, :, cur - 1].reshape(-1), h, context, outputs, keys, mask)
            log_probs = torch.log_softmax(self.out(torch.cat([h, context], dim=-1)).double(), dim=-1)
            V = log_probs.shape[1]
            totals = (log_probs.view(B, K, V) + running_scores[:, :, None]).view(B, K * V)
            top_scores, picked = totals.topk(2 * K, dim=1)
            source, tokens = picked // V, picked % V
            candidates = running[row, source]
            candidates[:, :, cur] = tokens
            ended = (tokens == eos_id) | (cur + 1 >= max_length)
            keep = torch.sort(ended.byte(), dim=1, stable=True).indices[:, :K]
            running = candidates[row, keep]
            running_scores = torch.where(ended[row, keep], -math.inf, top_scores[row, keep])
            parents = (source[row, keep] + row * K).reshape(-1)
            h, context = h[parents], context[parents]
            eligible = ended & (torch.arange(2 * K) < K) & torch.isfinite(top_scores) & can_improve[:, None]
            merged = torch.cat([finished_scores, torch.where(eligible, top_scores / cur, -math.inf)], dim=1)
            best = torch.sort(merged, dim=1, descending=True, stable=True).indices[:, :K]
            finished = torch.cat([finished, candidates], dim=1)[row, best]
            finished_scores = merged[row, best]
            finished_length = torch.cat([finished_length, torch.full((B, 2 * K), cur + 1)], dim=1)[row, best]
            worst_kept = finished_scores.min(dim=1).values  # -inf until K hypotheses are kept
            can_improve &= running_scores[:, 0] / cur > worst_kept
            if not can_improve.any() or ended.all():
                break
        return finished[:, 0, :int(finished_length[:, 0].max())]


def adamw_param_groups(model, weight_decay):
    """Decay on 2-D (and larger) weights only, as nanoGPT and minigen do."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
