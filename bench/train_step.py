"""PIN train-step and evaluation throughput: `python bench/train_step.py [--arch mini,openflamingo3b,blip2]`.

For each VLM architecture it times the PIN training step (answer-token loss, backward into the
insert, Adam) and batched greedy evaluation, in two configurations measured in the same run:

* ``baseline``: the first implementation - fp32 weights, the frozen vision encoder run inside
  every step (no feature cache), plain Adam;
* ``fast``: bf16 weights (the insert stays fp32 and is added in fp32), cached patch features
  (``train.cache_features``: the encoder is frozen and PIN sits after it), fused Adam on CUDA.

OpenFlamingo-3B (open_clip ViT-L/14 + an MPT-1B-sized ``MptForCausalLM`` with cross-attention
in every layer, open_flamingo's perceiver) and BLIP-2 OPT-2.7B (ViT-g/14, Q-Former, OPT-2.7B)
are built from configs with random weights through the libraries' own classes: speed does not
depend on weight values. ``--tiny`` builds small versions of both (the CPU smoke test).

Model FLOPs are counted by ``torch.utils.flop_counter`` on one real step (forward + backward;
the backward of a frozen network computes input gradients only); MFU = FLOP/s over the GPU's
dense bf16 peak (``--peak-tflops``, 989 for an H100 SXM). Prints a table and writes
bench/results/train_step.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pin.insert import InsertConfig, PositionalInsert  # noqa: E402
from pin.machine import cpu_name  # noqa: E402
from pin.vlm.tokenizer import build_word_tokenizer  # noqa: E402

WORDS = ["dog", "cat", "red apple", "traffic light", "kite", "teddy bear", "cup", "car"]
AUTHORS_SAMPLES_PER_S = 9.6e6 / (2 * 86400) / 2  # 160 epochs x 60k images, ~2 days, 2 A6000s


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{cpu_name()} ({torch.get_num_threads()} threads)"


# ---------------------------------------------------------------------------------- builders
def build_openflamingo(tiny: bool):
    import open_clip
    from open_flamingo import Flamingo
    from open_flamingo.src.flamingo_lm import FlamingoLMMixin
    from transformers import MptConfig, MptForCausalLM

    from pin.vlm.openflamingo import END_OF_CHUNK, MEDIA_TOKEN, OpenFlamingoAdapter

    class FlamingoMptForCausalLM(FlamingoLMMixin, MptForCausalLM):
        """MptForCausalLM with open_flamingo's mixin as a real subclass (what its factory does
        at run time); OpenFlamingo-3B's language model is MPT-1B."""

    tokenizer = build_word_tokenizer(WORDS)
    if tiny:
        name = "pin-bench-tiny-vit"
        cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8,
                                                "head_width": 32},
               "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}
        folder = Path(tempfile.mkdtemp(prefix="pin-bench-clip"))
        (folder / f"{name}.json").write_text(json.dumps(cfg))
        open_clip.add_model_config(folder)
        lm_cfg = MptConfig(d_model=64, n_heads=4, n_layers=2, expansion_ratio=4, max_seq_len=128,
                           vocab_size=len(tokenizer))
    else:
        name = "ViT-L-14"
        # MPT-1B (mosaicml/mpt-1b-redpajama-200b): d_model 2048, 24 layers, 16 heads, vocab 50432
        lm_cfg = MptConfig(d_model=2048, n_heads=16, n_layers=24, expansion_ratio=4, max_seq_len=2048,
                           vocab_size=50432)
    clip = open_clip.create_model(name, pretrained=None)
    lm = FlamingoMptForCausalLM(lm_cfg)
    lm.set_decoder_layers_attr_name("transformer.blocks")
    flamingo = Flamingo(clip, lm, eoc_token_id=tokenizer.convert_tokens_to_ids(END_OF_CHUNK),
                        media_token_id=tokenizer.convert_tokens_to_ids(MEDIA_TOKEN),
                        vis_dim=clip.visual.transformer.width, cross_attn_every_n_layers=1)
    size = clip.visual.image_size[0] if isinstance(clip.visual.image_size, tuple) else clip.visual.image_size
    return OpenFlamingoAdapter(flamingo, None, tokenizer, name="openflamingo"), size


def build_blip2(tiny: bool):
    from transformers import Blip2Config, Blip2ForConditionalGeneration, OPTConfig

    from pin.vlm.blip2 import Blip2Adapter

    tokenizer = build_word_tokenizer(WORDS)
    if tiny:
        text = OPTConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                         num_attention_heads=4, max_position_embeddings=96, word_embed_proj_dim=32)
        config = Blip2Config(vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                                num_hidden_layers=2, num_attention_heads=4),
                             qformer_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                 intermediate_size=64, encoder_hidden_size=32, vocab_size=64,
                                                 max_position_embeddings=32),
                             text_config=text.to_dict(), num_query_tokens=4)
    else:
        # blip2-opt-2.7b: ViT-g/14 (39 layers, 1408 wide) at 224, 32 queries, OPT-2.7B
        text = OPTConfig(vocab_size=50272, hidden_size=2560, num_hidden_layers=32, ffn_dim=10240,
                         num_attention_heads=32, max_position_embeddings=2048, word_embed_proj_dim=2560)
        config = Blip2Config(vision_config=dict(image_size=224, patch_size=14, hidden_size=1408,
                                                intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16),
                             text_config=text.to_dict(), num_query_tokens=32)
    text_cfg = config.text_config
    text_cfg.pad_token_id, text_cfg.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    model = Blip2ForConditionalGeneration(config)
    return Blip2Adapter(model, tokenizer, None), config.vision_config.image_size


def build_mini(tiny: bool):
    from pin.vlm.mini import MiniVLMConfig, build_mini_flamingo, load_mini
    from pin.vlm.openflamingo import OpenFlamingoAdapter

    folder = ROOT / "models" / "mini_vlm"
    if not tiny and (folder / "mini_vlm.json").is_file():
        adapter = load_mini(folder)
    else:
        flamingo, processor, tokenizer = build_mini_flamingo(MiniVLMConfig(stem="conv", gate_init=1.0), WORDS)
        adapter = OpenFlamingoAdapter(flamingo, processor, tokenizer, name="mini")
    return adapter, adapter.flamingo.vision_encoder.image_size[0]


BUILDERS = {"mini": build_mini, "openflamingo3b": build_openflamingo, "blip2": build_blip2}


# ---------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _model(adapter) -> torch.nn.Module:
    return adapter.flamingo if hasattr(adapter, "flamingo") else adapter.model


def _encoder_forward(adapter, pixels):
    return adapter.patch_features(pixels)


def measure(adapter, image_size: int, *, fast: bool, batch: int, steps: int, warmup: int, device: torch.device,
            eval_batch: int, count_flops: bool) -> dict:
    model = _model(adapter)
    dtype = torch.bfloat16 if fast and device.type == "cuda" else torch.float32  # CPUs: bf16 is slower
    model.to(device=device, dtype=dtype)
    if hasattr(adapter, "model"):  # BLIP-2 keeps the Q-Former in fp32 in transformers; do the same
        adapter.model.qformer.float()
        adapter.model.query_tokens.data = adapter.model.query_tokens.data.float()
    torch.manual_seed(0)
    insert = PositionalInsert(InsertConfig.for_site(adapter.site, layers=2)).to(device)
    opt = torch.optim.Adam(insert.parameters(), lr=1e-3, fused=fast and device.type == "cuda")
    pixels = torch.randn(batch, 3, image_size, image_size, device=device, dtype=dtype)
    prompts = [f"<image>In the image is a {WORDS[i % len(WORDS)]} located at" for i in range(batch)]
    answers = [" [28,56,140,196]" for _ in range(batch)]
    if not hasattr(adapter, "flamingo"):  # BLIP-2 prompts carry no <image> token
        prompts = [p.replace("<image>", "") for p in prompts]
    cached = _encoder_forward(adapter, pixels) if fast else None

    def step():
        feats = cached if fast else _encoder_forward(adapter, pixels)
        loss = adapter.answer_loss(feats, prompts, answers, insert())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    train_s = (time.perf_counter() - t0) / steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    flops = None
    if count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
    # evaluation: batched greedy decoding with the KV cache, 12 new tokens at most
    eprompts = prompts[:1] * eval_batch
    with torch.no_grad():
        efeats = _encoder_forward(adapter, pixels[:1].expand(eval_batch, -1, -1, -1).contiguous())
        pi = insert()
        adapter.generate(efeats, eprompts, insert=pi, max_new_tokens=12)
        _sync(device)
        t0 = time.perf_counter()
        reps = 3
        for _ in range(reps):
            feats = efeats if fast else _encoder_forward(adapter, pixels[:1].expand(eval_batch, -1, -1, -1).contiguous())
            adapter.generate(feats, eprompts, insert=pi, max_new_tokens=12)
        _sync(device)
        eval_s = (time.perf_counter() - t0) / reps
    return {"config": "fast" if fast else "baseline", "dtype": str(dtype).replace("torch.", ""),
            "feature_cache": fast, "batch": batch, "step_s": train_s, "samples_per_s": batch / train_s,
            "peak_gib": peak, "flops_per_step": flops, "eval_queries_per_s": eval_batch / eval_s}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="mini,openflamingo3b,blip2")
    ap.add_argument("--tiny", action="store_true", help="small random models (CPU smoke test)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--eval-batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100 SXM: 989)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_step.json"))
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 baseline is real fp32
    rows = []
    for arch in args.arch.split(","):
        torch.manual_seed(0)
        t0 = time.perf_counter()
        try:
            with device:  # random weights initialised where they will run
                adapter, size = BUILDERS[arch](args.tiny)
        except Exception as err:  # one architecture failing to build must not lose the others
            rows.append({"arch": arch, "config": "build", "error": repr(err)[:300]})
            print(json.dumps(rows[-1]), flush=True)
            continue
        build_s = time.perf_counter() - t0
        n_params = sum(p.numel() for p in _model(adapter).parameters())
        for fast in (False, True):  # the same weights: fp32 first, then cast to bf16
            try:
                r = measure(adapter, size, fast=fast, batch=args.batch, steps=args.steps, warmup=args.warmup,
                            device=device, eval_batch=args.eval_batch, count_flops=device.type == "cuda" or args.tiny)
            except Exception as err:  # out of memory, or a library difference on that machine
                r = {"config": "fast" if fast else "baseline", "error": repr(err)[:300]}
            r.update(arch=arch, n_params=n_params, build_s=round(build_s, 1))
            if r.get("flops_per_step") and device.type == "cuda":
                r["mfu"] = r["flops_per_step"] / r["step_s"] / (args.peak_tflops * 1e12)
            rows.append(r)
            print(json.dumps(r), flush=True)
        del adapter
        if device.type == "cuda":
            torch.cuda.empty_cache()
    rows_ok = [r for r in rows if "error" not in r]
    for arch in {r["arch"] for r in rows_ok}:
        base = next((r for r in rows_ok if r["arch"] == arch and r["config"] == "baseline"), None)
        for r in rows_ok:
            if r["arch"] == arch and base:
                r["train_speedup"] = r["samples_per_s"] / base["samples_per_s"]
                r["eval_speedup"] = r["eval_queries_per_s"] / base["eval_queries_per_s"]
                r["vs_authors_per_gpu"] = r["samples_per_s"] / AUTHORS_SAMPLES_PER_S
    result = {"machine": machine(), "torch": torch.__version__, "tiny": args.tiny, "rows": rows}
    print(f"\nmachine: {result['machine']}  (torch {torch.__version__})")
    print(f"{'arch':<16}{'config':<10}{'params':>8}{'samples/s':>11}{'x base':>8}{'peak GiB':>10}{'MFU':>7}"
          f"{'eval q/s':>10}{'x base':>8}")
    for r in rows_ok:
        mfu = f"{100 * r['mfu']:.0f}%" if r.get("mfu") else "-"
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] else "-"
        print(f"{r['arch']:<16}{r['config']:<10}{r['n_params'] / 1e6:>7.0f}M{r['samples_per_s']:>11.1f}"
              f"{r.get('train_speedup', float('nan')):>8.2f}{peak:>10}{mfu:>7}{r['eval_queries_per_s']:>10.1f}"
              f"{r.get('eval_speedup', float('nan')):>8.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
