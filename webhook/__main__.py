from webhook.cli import main

main(prog_name="podmutate")
