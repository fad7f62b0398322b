"""scripts/train_rqvae.py end to end on synthetic data: files, determinism, clean user errors;
and the semantic property of the IDs (items of one topic share ID prefixes)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval.data import load_split
from retrieval.core.errors import RecError
from rqvae.artifact import SemanticIds
from rqvae.disambiguation import prefix_sharing
from rqvae.embeddings import item_embeddings
from rqvae.pipeline import build_semantic_ids
from rqvae.residual_kmeans import BalancedRQKMeans, RQKMeans

from reliability_cases import user_error_line

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["SyntheticSource.num_users=400", "SyntheticSource.num_items=200",
         "make_tokenizer.codebook_size=16", "RQVAETokenizer.steps=60",
         "RQVAETokenizer.batch_size=128", "RQVAETokenizer.reset_every=20"]


def _synthetic_split(num_users: int, num_items: int):
    import gin
    gin.clear_config()
    gin.bind_parameter("SyntheticSource.num_users", num_users)
    gin.bind_parameter("SyntheticSource.num_items", num_items)
    try:
        return load_split("synthetic")
    finally:
        gin.clear_config()


def _run(run_dir: Path, *params: str, gin_file: str = "configs/synthetic/rqvae.gin"):
    cmd = [sys.executable, "scripts/train_rqvae.py", "--gin_file", gin_file, "--run_dir", str(run_dir)]
    for p in (*SMALL, *params):
        cmd += ["--gin_param", p]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_script_writes_the_artifact_and_same_seed_gives_byte_identical_ids(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    ra = _run(a)
    assert ra.returncode == 0, ra.stderr
    assert "collisions (d>0)" in ra.stdout
    for f in ["semantic_ids.safetensors", "semantic_ids.json", "tokenizer.safetensors",
              "results.json", "config.gin"]:
        assert (a / f).is_file(), f
    rb = _run(b)
    assert rb.returncode == 0, rb.stderr
    assert (a / "semantic_ids.safetensors").read_bytes() == (b / "semantic_ids.safetensors").read_bytes()

    sids = SemanticIds.load(a)
    small = _synthetic_split(400, 200)
    sids.check_dataset(small.fingerprint)                  # the split it was built from
    assert sids.num_items == small.num_items
    assert sids.codes[0].tolist() == [-1, -1, -1, -1] and sids.tokenizer == "rqvae"
    assert len(np.unique(sids.codes[1:], axis=0)) == sids.num_items
    with pytest.raises(RecError, match="another dataset or split"):
        sids.check_dataset(_synthetic_split(400, 201).fingerprint)
    res = json.loads((a / "results.json").read_text())
    assert [lv["level"] for lv in res["per_level"]] == [1, 2, 3] and res["levels"] == 3
    assert res["unique_ids"] is True and 0 <= res["collision_fraction"] < 1
    assert res["dataset_fingerprint"] == sids.dataset_fingerprint
    assert set(res["wall_seconds"]) == {"embeddings", "tokenizer_fit", "total"}


@pytest.mark.slow
def test_script_fewer_items_than_codes_exits_2_with_one_line_and_no_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    r = _run(run_dir, "make_tokenizer.codebook_size=1024")
    line = user_error_line(r)
    assert "fewer than the 1024 codes" in line and "smaller codebook" in line
    assert not run_dir.exists()


@pytest.mark.slow
def test_script_unknown_tokenizer_exits_2(tmp_path):
    r = _run(tmp_path / "run", "make_tokenizer.name='vqvae'")
    assert r.returncode == 2 and "vqvae" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def _same_topic_pairs(split, rng, n=20_000):
    """Random pairs of items (rows 0..N-1) with the same first genre, and random pairs."""
    genre = np.array([g.split("|")[0] for g in split.catalogue.fields["genres"][1:]])
    a = rng.integers(0, len(genre), n)
    b = rng.integers(0, len(genre), n)
    keep = a != b
    same = keep & (genre[a] == genre[b])
    return (a[same], b[same]), (a[keep], b[keep])


@pytest.fixture(scope="module")
def topic_split_and_embeddings(tmp_path_factory):
    import os
    old = os.environ.get("SEMID_CACHE_DIR")
    os.environ["SEMID_CACHE_DIR"] = str(tmp_path_factory.mktemp("topic-cache"))
    try:
        split = _synthetic_split(600, 400)
        return split, item_embeddings(split)
    finally:
        if old is None:
            os.environ.pop("SEMID_CACHE_DIR")
        else:
            os.environ["SEMID_CACHE_DIR"] = old


@pytest.mark.parametrize("tokenizer", [RQKMeans, BalancedRQKMeans])
def test_items_of_one_topic_share_id_prefixes_far_more_than_random_pairs(tokenizer,
                                                                         topic_split_and_embeddings):
    split, emb = topic_split_and_embeddings
    res = build_semantic_ids(split, tokenizer(levels=3, codebook_size=16, seed=0), emb)
    codes = res.ids.codes[1:]
    assert len(np.unique(codes, axis=0)) == split.num_items
    (sa, sb), (ra, rb) = _same_topic_pairs(split, np.random.default_rng(0))
    same_topic = prefix_sharing(codes[:, :3], sa, sb)       # shared 1-, 2-, 3-code prefixes
    random_pairs = prefix_sharing(codes[:, :3], ra, rb)
    # synthetic titles are made-up words, so the topic signal is weaker than on real text (cf. the
    # Beauty test); it still grows with the prefix length (measured: 2.7-3x at level 1, 7-9x at 2)
    assert same_topic[0] > 2.5 * random_pairs[0]
    assert same_topic[1] > 5 * random_pairs[1]


def test_category_prefix_sharing_by_hand():
    from rqvae.pipeline import category_prefix_sharing

    class Cat:
        fields = {"genres": np.array(["", "a", "a", "b", "b"], dtype=object)}

    class Split:
        catalogue = Cat()

    codes = np.array([[0, 0], [0, 1], [1, 0], [1, 0]])   # items 1,2 share c1; items 3,4 share all
    s = category_prefix_sharing(Split(), codes, pairs=5000)
    assert s["field"] == "genres"
    assert s["same_category"] == pytest.approx([1.0, 0.5], abs=0.03)
    # random distinct pairs: 1/3 are same-genre; P(share c1) = 1/3, P(share c1 and c2) = 1/6
    assert s["random_pairs"] == pytest.approx([1 / 3, 1 / 6], abs=0.03)


@pytest.mark.parametrize("dataset", ["amazon-beauty", "ml-latest-small", "ml-25m", "synthetic"])
def test_frozen_configs_parse_and_select_their_tokenizer(dataset):
    import gin

    from retrieval.core import cli
    from rqvae.tokenizer import make_tokenizer

    gin.add_config_file_search_path(str(ROOT))      # includes are relative to the repo root
    try:
        for name in ["rqvae", "rqkmeans", "balanced_rqkmeans"]:
            cli.parse_gin([str(ROOT / "configs" / dataset / f"{name}.gin")], [])
            tok = make_tokenizer()
            assert tok.name == name and tok.levels == 3
            assert tok.codebook_size == (64 if dataset == "synthetic" else 256)
            if name != "rqvae":
                assert tok.pca_dim == 24
        cli.parse_gin([str(ROOT / "configs" / dataset / "opq.gin")], [])
        tok = make_tokenizer()                       # the default generator's long IDs
        assert (tok.name, tok.levels, tok.codebook_size, tok.opq_iterations) == ("opq", 32, 256, 20)
    finally:
        gin.clear_config()
