"""One module per command (`hfx <command>`), each with `main(args)` that reads top to bottom. They share the
run's stages (`hfx.stages`) and the Hydra job wrapper (`hfx.commands.job`)."""
