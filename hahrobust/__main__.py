from hahrobust.cli import main

main()
