"""Evaluation: one module per benchmark, a builder module, thin command-line handlers.

    mbeir.py   M-BEIR (UniIR's file layout): read queries, pools and qrels; embed; Recall@k local and global
    build.py   write M-BEIR-layout benchmarks from captions folders (the flickr8k-dev and phone layouts)
    cli.py     `edge-gcl eval mbeir` and `edge-gcl bench build-mbeir`

Another benchmark (MMEB, CoVR) gets its own module beside mbeir.py, reusing `mbeir.embed_items` and
`edge_gcl.metrics`. Importing this package imports nothing heavy.
"""
