from machinery.cli import main

main()
