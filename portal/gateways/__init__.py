"""Real payment processors' gateways (the protocol, the sandbox and the registry stay in
portal.payments). Each module here imports its processor's library; portal.payments
imports a module only when PAYMENT_GATEWAY names it."""
