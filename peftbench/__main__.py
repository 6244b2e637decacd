"""`python -m peftbench` is the `peftbench` command (what launchers such as torchrun and
`accelerate launch -m peftbench` start)."""

from .cli.entry import main

if __name__ == "__main__":
    main()
