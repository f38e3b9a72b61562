from kws.cli import main

main()
