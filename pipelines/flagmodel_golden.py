#!/usr/bin/env python3
"""Golden vectors from the real FlagEmbedding FlagModel, for `bge golden --reference flagmodel`.

Every setting is passed explicitly (FlagEmbedding's defaults differ between versions and classes),
and what was used is written into the output, which bge completes (model id, revision, weights hash)
and validates. Reads a JSON request on stdin:
  {"model": DIR, "passages": [...], "queries": [...], "pooling": "cls", "normalize": true,
   "use_fp16": false, "max_length": 512, "instruction": "..." | null, "batch_size": 32}
and writes {"producer": {...}, "items": [...]} as JSON to the path given as the only argument.
"""
import json
import sys


def main() -> int:
    request = json.load(sys.stdin)
    out_path = sys.argv[1]
    try:
        import FlagEmbedding
        from FlagEmbedding import FlagModel
    except ImportError as err:  # bge checks this first; kept for direct use
        print(f"FlagEmbedding is not importable: {err}", file=sys.stderr)
        return 3
    try:
        from importlib.metadata import version

        fe_version = version("FlagEmbedding")
    except Exception:  # a source checkout without metadata
        fe_version = getattr(FlagEmbedding, "__version__", "unknown")

    instruction = request.get("instruction")
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

    device = str(getattr(model, "device", getattr(getattr(model, "model", None), "device", "unknown")))
    producer = {
        "name": "FlagEmbedding.FlagModel",
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
