from sedi.cli import main

main()
