from sedi.cli.app import main

main()
