"""InternLM2-based (2B/8B/26B) and InternViT-6B-style (26B/38B/78B) checkpoints: converted models equal a
straightforward implementation of the published architecture; the tokenizer works without remote code."""

import json

import pytest
import torch

from internvl_batch.config import GenerationConfig, ModelConfig
from internvl_batch.generation.pixels import normalize_tiles
from internvl_batch.generation.predictor import GenerationRequest, Predictor
from internvl_batch.imaging import ImagePreprocessor
from internvl_batch.model.checkpoint import read_checkpoint_info
from internvl_batch.model.loader import load_model
from internvl_batch.model.spm_tokenizer import SentencePieceChatTokenizer
from internvl_batch.model.tiny import make_tiny_checkpoint
from internvl_batch.model.tokenizer import load_tokenizer
from internvl_batch.prompts import PromptBuilder
from tests.media import encode, make_photo
from tests.reference_impl import image_features, internlm2_logits, original_weights
from tests.unit.test_prompts import reference_string


@pytest.fixture(scope="module")
def setup(tiny_internlm2_6b_checkpoint):
    path = tiny_internlm2_6b_checkpoint
    info = read_checkpoint_info(path)
    tokenizer = load_tokenizer(info)
    builder = PromptBuilder(tokenizer, info.system_message)
    model = load_model(info, torch.float64, "cpu", "eager", builder.image_context_id)
    return model, original_weights(path), json.loads((path / "config.json").read_text()), builder, tokenizer


def test_layout_is_the_published_one(setup):
    _, weights, cfg, _, _ = setup
    assert cfg["llm_config"]["architectures"] == ["InternLM2ForCausalLM"]
    assert cfg["vision_config"]["norm_type"] == "rms_norm" and cfg["vision_config"]["qk_normalization"]
    assert "language_model.model.layers.0.attention.wqkv.weight" in weights
    assert "language_model.output.weight" in weights and "vision_model.encoder.layers.0.attn.q_norm.weight" in weights
    assert (
        "vision_model.encoder.layers.0.attn.qkv.bias" not in weights
        and "vision_model.encoder.layers.0.norm1.bias" not in weights
    )


def test_6b_style_image_features_equal_reference(setup):
    model, weights, cfg, _, _ = setup
    pixels = normalize_tiles(ImagePreprocessor()(encode(make_photo(900, 500), "PNG")).tiles, dtype=torch.float64)
    with torch.no_grad():
        ours = model.model.get_image_features(pixel_values=pixels, return_dict=True).pooler_output
    torch.testing.assert_close(ours, image_features(weights, cfg, pixels), rtol=1e-9, atol=1e-9)


def test_internlm2_logits_equal_reference(setup):
    model, weights, cfg, builder, _ = setup
    processed = ImagePreprocessor()(encode(make_photo(634, 634), "PNG"))
    ids = torch.from_numpy(builder.build("What is this?", [processed.num_tiles]).input_ids)
    pixels = normalize_tiles(processed.tiles, dtype=torch.float64)
    with torch.no_grad():
        ours = model(input_ids=ids[None], pixel_values=pixels).logits[0]
        embeds = weights["language_model.model.tok_embeddings.weight"][ids].clone()
        embeds[ids == builder.image_context_id] = image_features(weights, cfg, pixels).reshape(-1, embeds.shape[-1])
        ref = internlm2_logits(weights, cfg, embeds)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)


def test_wqkv_split_is_per_kv_group(setup):
    model, weights, cfg, _, _ = setup
    llm = cfg["llm_config"]
    heads, kv = llm["num_attention_heads"], llm["num_key_value_heads"]
    hd, g = llm["hidden_size"] // heads, heads // kv
    wqkv = weights["language_model.model.layers.1.attention.wqkv.weight"]
    attn = model.model.language_model.layers[1].self_attn
    # Query head h is row block (h // g) * (g + 2) + h % g of wqkv; KV head j's key is block j * (g + 2) + g.
    for h in range(heads):
        block = (h // g) * (g + 2) + h % g
        assert torch.equal(attn.q_proj.weight[h * hd : (h + 1) * hd], wqkv[block * hd : (block + 1) * hd])
    for j in range(kv):
        assert torch.equal(
            attn.k_proj.weight[j * hd : (j + 1) * hd], wqkv[(j * (g + 2) + g) * hd : (j * (g + 2) + g + 1) * hd]
        )
        assert torch.equal(
            attn.v_proj.weight[j * hd : (j + 1) * hd], wqkv[(j * (g + 2) + g + 1) * hd : (j * (g + 2) + g + 2) * hd]
        )


def reference_internlm2_ids(directory, text):
    """The remote-code tokenizer's behaviour: <s>, then the text split on added tokens, the rest SentencePiece."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))
    added = json.loads((directory / "added_tokens.json").read_text())
    chat = {t: sp.piece_to_id(t) for t in ("<|im_start|>", "<|im_end|>")}
    table = {**added, **chat}
    ids, rest = [sp.bos_id()], text
    while rest:
        hits = [(rest.find(t), t) for t in table if rest.find(t) >= 0]
        if not hits:
            ids += sp.encode(rest)
            break
        at, token = min(hits, key=lambda h: (h[0], -len(h[1])))
        if at:
            ids += sp.encode(rest[:at])
        ids.append(table[token])
        rest = rest[at + len(token) :]
    return ids


@pytest.mark.parametrize(
    "question,tiles,kind",
    [
        ("Please describe the image shortly.", [13], "image"),
        ("What differs?", [5, 1, 13], "images"),
        ("What is the red panda doing?", [1] * 8, "video"),
    ],
)
def test_internlm2_prompt_ids_equal_reference(setup, tiny_internlm2_6b_checkpoint, question, tiles, kind):
    _, _, _, builder, tokenizer = setup
    assert isinstance(tokenizer, SentencePieceChatTokenizer)
    prompt = builder.build(question, tiles, kind=kind)
    prefix = {
        "image": "<image>\n",
        "images": "".join(f"Image-{i + 1}: <image>\n" for i in range(len(tiles))),
        "video": "".join(f"Frame{i + 1}: <image>\n" for i in range(len(tiles))),
    }[kind]
    expected = reference_internlm2_ids(tiny_internlm2_6b_checkpoint, reference_string(prefix + question, tiles))
    assert prompt.input_ids.tolist() == expected
    assert prompt.input_ids[0] == tokenizer.bos_token_id  # InternLM2 prepends <s>
    assert builder.stop_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_no_remote_code_is_ever_run(tmp_path):
    """Checkpoints name remote classes (auto_map, tokenizer_class); a booby-trapped module must stay unread."""
    path = make_tiny_checkpoint(tmp_path / "ckpt", llm="internlm2", vision="6b-style")
    marker = tmp_path / "executed"
    for name in (
        "modeling_internvl_chat.py",
        "configuration_internvl_chat.py",
        "tokenization_internlm2.py",
        "modeling_internlm2.py",
        "configuration_internlm2.py",
    ):
        (path / name).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    predictor = Predictor(ModelConfig(path=str(path)), GenerationConfig(max_new_tokens=2))
    image = ImagePreprocessor()(encode(make_photo(448, 448), "PNG"))
    predictor.generate([GenerationRequest(predictor.prompts.build("Hi", [1]).input_ids, image.tiles)])
    assert not marker.exists()


def test_internlm2_batched_equals_single(tiny_internlm2_6b_checkpoint):
    predictor = Predictor(
        ModelConfig(path=str(tiny_internlm2_6b_checkpoint), dtype="float64"), GenerationConfig(max_new_tokens=6)
    )
    pre = ImagePreprocessor()
    rows = []
    for k, size in enumerate([(448, 448), (634, 634), (800, 600)]):
        image = pre(encode(make_photo(*size, seed=k), "PNG"))
        for question in ("Describe.", "Please describe the image in detail, every object and colour."):
            rows.append(GenerationRequest(predictor.prompts.build(question, [image.num_tiles]).input_ids, image.tiles))
    batched = [r.output_ids for r in predictor.generate(rows)]
    assert batched == [predictor.generate([r])[0].output_ids for r in rows]
    assert len({tuple(b) for b in batched}) > 1


def test_hf_layout_of_internlm2_loads_equal(tmp_path, tiny_internlm2_6b_checkpoint):
    native = make_tiny_checkpoint(tmp_path / "hf", layout="hf", llm="internlm2", vision="6b-style")
    assert json.loads((native / "config.json").read_text())["text_config"]["model_type"] == "llama"
    a_info, b_info = read_checkpoint_info(tiny_internlm2_6b_checkpoint), read_checkpoint_info(native)
    image_id = load_tokenizer(a_info).convert_tokens_to_ids("<IMG_CONTEXT>")
    a = load_model(a_info, torch.float32, "cpu", "sdpa", image_id).state_dict()
    b = load_model(b_info, torch.float32, "cpu", "sdpa").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert isinstance(load_tokenizer(b_info), SentencePieceChatTokenizer)


def test_deterministic_spm_tokenizer(tmp_path):
    a = make_tiny_checkpoint(tmp_path / "a", llm="internlm2")
    b = make_tiny_checkpoint(tmp_path / "b", llm="internlm2")
    for name in ("tokenizer.model", "config.json", "model-00001-of-00002.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
