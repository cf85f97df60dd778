"""Gift subscriptions: a catalog plan given for a number of days (`manual_gift`)."""
