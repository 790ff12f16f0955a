"""Ciclo's benchmarks: ``python -m bench`` (``make bench``) writes ``bench/results.md``.

Modules: ``processes`` (servers and their lifetimes), ``load`` (wrk with ``wrk_post.lua``, and
the end-to-end probe), ``baselines`` (physical baselines taken in the same run), ``baseline_app``
(the bare FastAPI servers), ``machine`` (machine facts, other processes' CPU use), ``report``
(ratios, Markdown and JSON), ``__main__`` (orchestration and command-line options).
"""
