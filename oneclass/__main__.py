from oneclass.cli.main import run

run()
