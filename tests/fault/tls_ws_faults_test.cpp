// TLS fault tests of the WebSocket and HTTP clients (F61-F63): helper W fills this file.
