#!/usr/bin/env python3
"""Golden data for the GGUF reader: golden/quants.gguf, written by the `gguf` package's GGUFWriter,
holds one tensor per supported type made of random blocks (valid f16 scales), and
golden/quants_dequant.safetensors holds what gguf.quants.dequantize makes of them (fp32).
Run: .venv-ref/bin/python tests/reference/make_gguf_golden.py"""
import os

import numpy as np
from gguf import GGMLQuantizationType as Q, GGUFWriter
from gguf.quants import dequantize
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(0)
# type: (values per block, bytes per block, byte offsets of f16 scale fields)
TYPES = {Q.Q8_0: (32, 34, [0]), Q.Q4_0: (32, 18, [0]), Q.Q4_1: (32, 20, [0, 2]),
         Q.Q4_K: (256, 144, [0, 2]), Q.Q5_K: (256, 176, [0, 2]), Q.Q6_K: (256, 210, [208])}
w = GGUFWriter(os.path.join(HERE, "golden/quants.gguf"), "llama")
w.add_uint32("test.answer", 42)
w.add_string("test.name", "quants")
w.add_array("test.list", ["a", "bb", "ccc"])
expected = {}
rows = 3
for qt, (bs, nb, scales) in TYPES.items():
    cols = 2 * bs
    blocks = rng.integers(0, 256, size=(rows * cols // bs, nb), dtype=np.uint8)
    for off in scales:
        blocks[:, off:off + 2] = (rng.uniform(0.01, 0.2, size=len(blocks)).astype(np.float16)
                                  .view(np.uint8).reshape(-1, 2))
    raw = blocks.reshape(rows, cols // bs * nb)
    w.add_tensor(qt.name, raw, raw_dtype=qt)
    expected[qt.name] = dequantize(raw, qt).reshape(rows, cols).astype(np.float32)
for name, dt in (("F32", np.float32), ("F16", np.float16)):
    x = rng.standard_normal((rows, 8)).astype(dt)
    w.add_tensor(name, x)
    expected[name] = x.astype(np.float32)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
save_file(expected, os.path.join(HERE, "golden/quants_dequant.safetensors"))
print({k: v.shape for k, v in expected.items()})
