#!/usr/bin/env python3
"""Golden vectors from the real FlagEmbedding FlagModel, for `bge golden --reference flagmodel`.

Every setting is passed explicitly (FlagEmbedding's defaults differ between versions and classes),
and what was used is written into the output, which bge completes (model id, revision, weights hash)
and validates. Reads a JSON request on stdin:
  {"model": DIR, "passages": [...], "queries": [...], "pooling": "cls", "normalize": true,
   "use_fp16": false, "max_length": 512, "instruction": "..." | null, "batch_size": 32}
and writes {"producer": {...}, "items": [...]} as JSON to the path given as the last argument.

With --m3 (bge-m3) it runs BGEM3FlagModel instead, with return_dense, return_sparse and
return_colbert_vecs all True, and each item also gets "sparse" ({"<token id>": weight}, FlagEmbedding's
lexical_weights) and "colbert" (its colbert_vecs: one vector per token after CLS, in full).
"""
import json
import sys


def main() -> int:
    request = json.load(sys.stdin)
    args = sys.argv[1:]
    m3 = "--m3" in args
    out_path = [a for a in args if a != "--m3"][-1]
    try:
        import FlagEmbedding
        from FlagEmbedding import FlagModel
        if m3:
            from FlagEmbedding import BGEM3FlagModel
    except ImportError as err:  # bge checks this first; kept for direct use
        print(f"FlagEmbedding is not importable: {err}", file=sys.stderr)
        return 3
    try:
        from importlib.metadata import version

        fe_version = version("FlagEmbedding")
    except Exception:  # a source checkout without metadata
        fe_version = getattr(FlagEmbedding, "__version__", "unknown")

    instruction = request.get("instruction")
    if m3:
        return run_m3(BGEM3FlagModel, request, out_path, fe_version)
    model = FlagModel(
        request["model"],
        pooling_method=request["pooling"],
        normalize_embeddings=request["normalize"],
        query_instruction_for_retrieval=instruction,
        use_fp16=request["use_fp16"],
    )
    batch_size = int(request.get("batch_size", 32))
    max_length = int(request["max_length"])
    items = []
    for kind, texts in (("passage", request["passages"]), ("query", request["queries"])):
        if not texts:
            continue
        if kind == "query":
            vectors = model.encode_queries(texts, batch_size=batch_size, max_length=max_length)
            inputs = [f"{instruction}{t}" if instruction else t for t in texts]
        else:
            vectors = model.encode(texts, batch_size=batch_size, max_length=max_length)
            inputs = texts
        ids = model.tokenizer(inputs, padding=False, truncation=True, max_length=max_length)["input_ids"]
        for text, vec, tok in zip(texts, vectors, ids):
            items.append({"text": text, "kind": kind, "input_ids": [int(i) for i in tok], "embedding": [float(x) for x in vec]})

    return write_result(out_path, "FlagEmbedding.FlagModel", model, request, fe_version, max_length, instruction, items)


def run_m3(BGEM3FlagModel, request, out_path, fe_version) -> int:
    """bge-m3's three heads from BGEM3FlagModel, every setting explicit."""
    instruction = request.get("instruction")
    model = BGEM3FlagModel(
        request["model"],
        pooling_method=request["pooling"],
        normalize_embeddings=request["normalize"],
        use_fp16=request["use_fp16"],
    )
    batch_size = int(request.get("batch_size", 32))
    max_length = int(request["max_length"])
    items = []
    for kind, texts in (("passage", request["passages"]), ("query", request["queries"])):
        if not texts:
            continue
        # BGEM3FlagModel.encode takes texts as they are: the query instruction (none for bge-m3) is prepended here.
        inputs = [f"{instruction}{t}" if instruction and kind == "query" else t for t in texts]
        out = model.encode(
            inputs,
            batch_size=batch_size,
            max_length=max_length,
            return_dense=True,
            return_sparse=True,
            return_colbert_vecs=True,
        )
        ids = model.tokenizer(inputs, padding=False, truncation=True, max_length=max_length)["input_ids"]
        for text, dense, lexical, colbert, tok in zip(texts, out["dense_vecs"], out["lexical_weights"], out["colbert_vecs"], ids):
            items.append({
                "text": text,
                "kind": kind,
                "input_ids": [int(i) for i in tok],
                "embedding": [float(x) for x in dense],
                "sparse": {str(k): float(w) for k, w in lexical.items()},
                "colbert": [[float(x) for x in row] for row in colbert],
            })
    return write_result(out_path, "FlagEmbedding.BGEM3FlagModel", model, request, fe_version, max_length, instruction, items)


def write_result(out_path, name, model, request, fe_version, max_length, instruction, items) -> int:
    """The producer record (every setting as it ran) and the items, as bge golden reads them."""
    device = str(getattr(model, "device", getattr(getattr(model, "model", None), "device", "unknown")))
    producer = {
        "name": name,
        "version": fe_version,
        "pooling": request["pooling"],
        "normalize": request["normalize"],
        # On CPU FlagModel switches fp16 off; record what actually ran.
        "use_fp16": bool(request["use_fp16"]) and "cpu" not in device,
        "max_length": max_length,
        "query_instruction": instruction,
        "device": device,
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"producer": producer, "items": items}, f, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
