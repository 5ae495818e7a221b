"""Generated code for exchange.v1; edit the .proto files, then run `make proto`."""
