"""`python -m hilif.train ...` = `hilif-train ...`, handy under torchrun:
`torchrun --nproc-per-node 8 -m hilif.train ...`."""

from hilif.train.cli import train_main

train_main()
