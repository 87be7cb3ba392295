"""Evaluation: one module per benchmark, a builder module, thin command-line handlers.

    mbeir.py   M-BEIR (UniIR's file layout): read queries, pools and qrels; embed; Recall@k local and global
    mmeb.py    MMEB's retrieval tasks (TIGER-Lab/MMEB-eval parquet files): hit@1 over each query's own candidates
    covr.py    CoVR composed video retrieval (WebVid-CoVR test csv + videos or frame folders): R@1/5/10/50
    build.py   write M-BEIR-layout benchmarks from captions folders (the flickr8k-dev and phone layouts)
    cli.py     `edge-gcl eval mbeir|mmeb|covr` and `edge-gcl bench build-mbeir`

Each benchmark has its own module beside mbeir.py, reusing `mbeir.embed_items` and `edge_gcl.metrics`.
Importing this package imports nothing heavy (PyAV and pyarrow load only when a video or parquet file is read).
"""
