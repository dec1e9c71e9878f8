"""One module per tab of the app; each builds its own components from the context it is given."""
