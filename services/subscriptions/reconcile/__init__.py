"""Provider subscription events (subscriptions.md §2.7): Stripe's and Square's word on the
subscriptions they back, applied to ours."""
