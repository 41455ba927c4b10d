"""Benchmarks of vs-coreml-esrgan, one module per measurement (run through scripts/bench.py).

- :mod:`bench.efficiency`: our backends' frames/s and pipeline efficiency (default);
- :mod:`bench.peers`: the same weights through vs-mlrt and Real-ESRGAN (``--peers``);
- :mod:`bench.ceiling`: the pipeline around the network with an instant backend, and the
  floor of one output-frame copy (``--ceiling``; ``--against COMMIT`` alternates with an
  older commit's pipeline);
- :mod:`bench.common`: timing, fetching and reporting helpers they share.

A new measurement is a new module with a ``main(argv)``; scripts/bench.py names it.
"""
