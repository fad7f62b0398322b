"""Infrastructure every package uses: errors, atomic IO, the command-line runner, torchrun helpers,
gin value checks, run locks, checkpoints and the one training loop. Nothing here imports upward."""
