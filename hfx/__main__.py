from hfx.cli import main

main()
