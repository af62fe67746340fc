from flotilla.runtime.cli import main

main()
