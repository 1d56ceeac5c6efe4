from slimasr.cli import main

main()
