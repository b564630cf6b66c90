"""A test double of FlagEmbedding: the FlagModel API (1.2's signatures) without torch or weights.

It records how it was constructed and called (to the JSON-lines file named by FAKE_FLAGMODEL_LOG),
prepends the query instruction as FlagModel.encode_queries does, tokenises one id per character,
and returns deterministic vectors, so that bge's glue to the real FlagModel can be tested where
FlagEmbedding cannot be installed. FAKE_FLAGMODEL_FAIL makes the constructor raise.
"""
import hashlib
import json
import math
import os

__version__ = "0.0-test-double"


def _log(event, **fields):
    path = os.environ.get("FAKE_FLAGMODEL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"event": event, **fields}, ensure_ascii=False) + "\n")


class _Tokenizer:
    def __call__(self, texts, padding=False, truncation=True, max_length=512):
        ids = []
        for t in texts:
            body = [1000 + (ord(c) % 20000) for c in t]
            if truncation:
                body = body[: max_length - 2]
            ids.append([101] + body + [102])
        return {"input_ids": ids}


class FlagModel:
    def __init__(self, model_name_or_path, pooling_method="cls", normalize_embeddings=True, query_instruction_for_retrieval=None, use_fp16=True):
        _log("init", model=model_name_or_path, pooling_method=pooling_method, normalize_embeddings=normalize_embeddings,
             query_instruction_for_retrieval=query_instruction_for_retrieval, use_fp16=use_fp16)
        if os.environ.get("FAKE_FLAGMODEL_FAIL"):
            raise RuntimeError("CUDA out of memory (test double)")
        with open(os.path.join(model_name_or_path, "config.json"), encoding="utf-8") as f:
            self.dim = json.load(f)["hidden_size"]
        self.normalize_embeddings = normalize_embeddings
        self.query_instruction_for_retrieval = query_instruction_for_retrieval
        self.tokenizer = _Tokenizer()
        self.device = "cpu"

    def encode(self, sentences, batch_size=256, max_length=512, convert_to_numpy=True):
        _log("encode", sentences=sentences, batch_size=batch_size, max_length=max_length)
        out = []
        for s in sentences:
            digest = hashlib.sha256(s.encode("utf-8")).digest()
            v = [((digest[i % 32] + i) % 97) / 97.0 - 0.5 for i in range(self.dim)]
            if self.normalize_embeddings:
                n = math.sqrt(sum(x * x for x in v))
                v = [x / n for x in v]
            out.append(v)
        return out

    def encode_queries(self, queries, batch_size=256, max_length=512, convert_to_numpy=True):
        if self.query_instruction_for_retrieval is not None:
            queries = ["{}{}".format(self.query_instruction_for_retrieval, q) for q in queries]
        return self.encode(queries, batch_size=batch_size, max_length=max_length)


class BGEM3FlagModel:
    """BGEM3FlagModel's API (1.2's signatures): encode returns dense_vecs, lexical_weights and colbert_vecs.

    Lexical weights are keyed by str(token id) with the specials (101, 102 here) dropped, one ColBERT
    vector per token after the first, each normalised; every value derives from the text's sha256.
    """

    def __init__(self, model_name_or_path, pooling_method="cls", normalize_embeddings=True, use_fp16=True, device=None):
        _log("m3-init", model=model_name_or_path, pooling_method=pooling_method, normalize_embeddings=normalize_embeddings, use_fp16=use_fp16)
        if os.environ.get("FAKE_FLAGMODEL_FAIL"):
            raise RuntimeError("CUDA out of memory (test double)")
        self._dense = FlagModel(model_name_or_path, pooling_method=pooling_method, normalize_embeddings=normalize_embeddings, use_fp16=use_fp16)
        self.dim = self._dense.dim
        self.tokenizer = _Tokenizer()
        self.device = "cpu"

    def encode(self, sentences, batch_size=12, max_length=8192, return_dense=True, return_sparse=False, return_colbert_vecs=False):
        _log("m3-encode", sentences=sentences, batch_size=batch_size, max_length=max_length,
             return_dense=return_dense, return_sparse=return_sparse, return_colbert_vecs=return_colbert_vecs)
        ids = self.tokenizer(sentences, truncation=True, max_length=max_length)["input_ids"]
        out = {"dense_vecs": None, "lexical_weights": None, "colbert_vecs": None}
        if return_dense:
            out["dense_vecs"] = self._dense.encode(sentences, batch_size=batch_size, max_length=max_length)
        if return_sparse:
            lexical = []
            for s, tok in zip(sentences, ids):
                weights = {}
                for t, i in enumerate(tok):
                    if i in (101, 102):
                        continue
                    w = ((i * 31 + t) % 17) / 17.0
                    if w > 0 and w > weights.get(str(i), 0):
                        weights[str(i)] = w
                lexical.append(weights)
            out["lexical_weights"] = lexical
        if return_colbert_vecs:
            colbert = []
            for s, tok in zip(sentences, ids):
                rows = []
                for t in range(1, len(tok)):
                    digest = hashlib.sha256(f"{s}\u0000{t}".encode("utf-8")).digest()
                    v = [((digest[k % 32] + k) % 89) / 89.0 - 0.5 for k in range(self.dim)]
                    n = math.sqrt(sum(x * x for x in v))
                    rows.append([x / n for x in v])
                colbert.append(rows)
            out["colbert_vecs"] = colbert
        return out
