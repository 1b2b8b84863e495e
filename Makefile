# The two commands of the README. Each installs what it needs on first use.
.PHONY: demo test bootstrap services-up services-down

demo:
	./scripts/demo.sh $(ARGS)

test:
	./scripts/test.sh

bootstrap:
	./scripts/bootstrap.sh

services-up: bootstrap
	.venv/bin/imaging-agent services up

services-down:
	.venv/bin/imaging-agent services down
