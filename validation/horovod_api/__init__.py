"""Horovod public-API checks: every API family, 2+ ranks, values compared with references.

One program per framework (`python -m validation.horovod_api --framework tensorflow|torch`)
runs every family under any launcher (`horovodrun --gloo`, `horovodrun --mpi`, `mpirun`) and
prints one line per check and a summary line per rank. What Horovod 0.28.1 does not support
with these frameworks is checked too: it must raise an error that names the API.
The audit these checks back is recipes/patches/horovod/0.28.1/API.md.
"""
